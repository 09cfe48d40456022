"""The registry of studies: one notebook each, with per-profile parameters.

A study's notebook holds its defaults in its ``parameters`` cell (the embedded profile); a profile
here lists only what differs. Adding a study means adding a notebook, a few clipnb functions and
one entry below (and a line in ``book/_toc.yml``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES: tuple[str, ...] = ("embedded", "smoke", "full")
DEFAULT_PROFILE = "embedded"


@dataclass(frozen=True)
class Study:
    name: str
    notebook: str
    title: str
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: glue key -> label, shown on the book's summary page
    headline: dict[str, str] = field(default_factory=dict)

    def overrides(self, profile: str) -> dict[str, Any]:
        if profile not in PROFILES:
            raise ValueError(f"Unknown profile {profile!r}. Known: {', '.join(PROFILES)}.")
        return {"profile": profile, **self.profiles.get(profile, {})}


STUDIES: list[Study] = [
    # --- issue: the embedded CLIP -------------------------------------------------------------
    Study(
        name="embedded_clip",
        notebook="00_embedded_clip.py",
        title="The embedded CLIP",
        profiles={"smoke": {"n_retrieval": 64, "n_per_class": 8}},
        headline={
            "zs_shape_photo": "zero-shot, world shapes (photo), %",
            "zs_shape_heldout": "zero-shot, world shapes (held-out style), %",
            "zs_digits": "zero-shot, handwritten digits, %",
            "pretrain_minutes": "pretraining wall time, min",
        },
    ),
    # --- issue: zero-shot baselines and linear probes -----------------------------------------
    Study(
        name="zero_shot",
        notebook="01_zero_shot.py",
        title="Zero-shot and linear probes",
        profiles={
            "smoke": {
                "datasets": ["world-shape-photo", "digits"],
                "world_per_class": [16, 8, 16],
                "pixel_size": 8,
                "probe_shots": [1, 2],
                "seeds": [0],
            },
            "full": {
                "datasets": ["cifar100", "mnist", "flowers102", "food101", "animals"],
                "baselines": ["resnet50"],
                "probe_shots": [1, 2, 4, 8],
                "focus_dataset": "mnist",
                "contrast_dataset": "cifar100",
                "label_probs_datasets": ["cifar100", "mnist"],
            },
        },
        headline={
            "zs_focus_ensemble": "zero-shot (80 prompts), OOD digits, %",
            "probe_focus": "CLIP linear probe, OOD digits, %",
            "baseline_focus": "best non-CLIP probe, OOD digits, %",
            "ensemble_gain_mean": "prompt ensemble gain over 1 prompt (mean), points",
        },
    ),
    # --- issue: zero-shot-initialised few-shot head -------------------------------------------
    Study(
        name="few_shot_init",
        notebook="02_few_shot_init.py",
        title="Few-shot initialisation",
        profiles={
            "smoke": {
                "datasets": ["digits", "world-shape-photo"],
                "world_per_class": [16, 8, 16],
                "shots": [1, 2],
                "seeds": [0],
                "epochs": 10,
                "lrs": [0.01],
                "curve_epochs": 10,
            },
            "full": {
                "datasets": ["cifar100", "mnist"],
                "focus_dataset": "mnist",
                "curve_dataset": "cifar100",
            },
        },
        headline={
            "random_focus_1shot": "random-init head, 1 shot, OOD digits, %",
            "zsinit_focus_1shot": "zero-shot-init head, 1 shot, OOD digits, %",
            "zs_focus": "zero-shot, OOD digits, %",
            "n_random_below_zs_small": "cells at 1–2 shots where random init < zero-shot",
        },
    ),
    # --- issue: finetuning each part, and Grad-CAM --------------------------------------------
    Study(
        name="finetune_parts",
        notebook="03_finetune_parts.py",
        title="Finetuning each part of CLIP",
        profiles={
            "smoke": {
                "shots": [[1, 5], [1, 2], [1, 5]],
                "selection_shots": [5, 2, 5],
                "world_per_class": [8, 8, 16],
                "seeds": [0],
                "encoder_lrs": [0.001],
                "projection_lrs": [0.01],
                "step_grid": [5],
                "batch_size": 8,
                "cam_images": 8,
            },
            "full": {
                "datasets": ["mnist", "flowers102", "animals"],
                "max_per_split": 2000,
                "encoder_lrs": [1e-06, 1e-05, 0.0001],
                "projection_lrs": [1e-05, 0.0001, 0.001],
                "step_grid": [100, 200],
                "batch_size": 32,
                "cam_images": 64,
            },
        },
        headline={
            "max_mnist_image_encoder": "handwritten digits, image encoder finetuned (most shots), %",
            "max_mnist_text_projection": "handwritten digits, text projection finetuned (most shots), %",
            "max_animals_image_projection": "world photos, image projection finetuned (most shots), %",
            "finetune_minutes": "finetuning sweep wall time, min",
        },
    ),
    # --- issue: Tip-Adapter ---------------------------------------------------------------------
    Study(
        name="tip_adapter",
        notebook="04_tip_adapter.py",
        title="Tip-Adapter",
        profiles={
            "smoke": {
                "datasets": ["digits", "world-shape-sketch"],
                "shots": [1, 4],
                "seeds": [0],
                "alpha_fractions": [0.0, 0.01, 0.1, 1.0],
                "betas": [1.0, 5.0, 20.0],
                "tip_f_epochs": 4,
                "tip_f_lrs": [0.001],
                "head_epochs": 10,
                "head_lrs": [0.01],
                "cam_images": 3,
                "mask_images": 8,
            },
            "full": {
                "datasets": ["mnist", "flowers102", "animals"],
                "table_dataset": "mnist",
                "cam_dataset": "mnist",
                "mask_dataset": "",
            },
        },
        headline={
            "t5_zs": "zero-shot, handwritten digits, %",
            "t5_tip": "Tip-Adapter, handwritten digits, 5 shots, %",
            "t5_tipf": "Tip-Adapter-F, handwritten digits, 5 shots, %",
        },
    ),
]


def get_study(name: str) -> Study:
    for study in STUDIES:
        if study.name == name:
            return study
    raise ValueError(
        f"Unknown study {name!r}. Known studies: {', '.join(s.name for s in STUDIES)}."
    )


def repo_root() -> Path:
    """The checkout holding notebooks/ and book/ (the package is installed editable from it)."""
    here = Path(__file__).resolve().parent.parent
    if (here / "notebooks").is_dir():
        return here
    cwd = Path.cwd()
    for candidate in (cwd, *cwd.parents):
        if (candidate / "notebooks").is_dir() and (candidate / "book").is_dir():
            return candidate
    raise FileNotFoundError("Cannot find the clipnb checkout (a folder with notebooks/ and book/).")
