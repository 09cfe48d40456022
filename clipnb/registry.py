"""The registry of studies: one notebook each, with per-profile parameters.

A study's notebook holds its defaults in its ``parameters`` cell (the embedded profile); a profile
here lists only what differs. Adding a study means adding a notebook, a few clipnb functions and
one entry below (and a line in ``book/_toc.yml``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipnb.core.profiles import PROFILES


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
            "zs_digit_photo": "zero-shot, printed digits (photo), %",
            "image2text_R1": "image→text R@1, held-out pairs, %",
            "zs_shape_heldout": "zero-shot, world shapes (held-out style), %",
            "zs_digits": "zero-shot, handwritten digits, %",
            "pretrain_minutes": "pretraining wall time, min",
            "pretrain_images_per_s": "pretraining throughput, images/s",
            "peak_percent": "pretraining, share of fp32 matmul peak, %",
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
                "contrast_dataset": "cifar100",
            },
        },
        headline={
            "zs_contrast": "zero-shot, in-distribution task (world shapes), %",
            "random_contrast_1shot": "random-init head, 1 shot, same task, %",
            "zsinit_contrast_1shot": "zero-shot-init head, 1 shot, same task, %",
            "zsinit_focus_1shot": "zero-shot-init head, 1 shot, OOD digits, %",
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
    # --- issue: CLIPood -------------------------------------------------------------------------
    Study(
        name="clipood",
        notebook="05_clipood.py",
        title="CLIPood under domain shift",
        profiles={
            "smoke": {
                "dg_options": {"per_class": [4, 4, 8]},
                "b2n_shots": 4,
                "seeds": [0, 1],
                "steps": [3],
                "margins": [0.0, 0.3],
                "betas": [0.5, 1.0],
                "batch_size": 16,
                "curve_points": 3,
            },
            "full": {
                "dg_datasets": ["pacs", "office_home"],
                "dg_options": {},
                "b2n_datasets": ["oxford_pets", "flowers102", "food101", "cifar100"],
                "b2n_shots": 16,
                "steps": [1000, 5000],
                "lrs": [1e-05, 5e-06],
                "margins": [0.0, 0.1, 0.3, 1.0],
                "betas": [0.25, 0.5, 1.0, 2.0],
                "ema_decay": 0.999,
                "batch_size": 32,
                "curve_points": 10,
            },
        },
        headline={
            "dg_clipood_avg": "CLIPood, leave-one-style-out average, %",
            "dg_erm_avg": "ERM finetune, leave-one-style-out average, %",
            "dg_zs_avg": "zero-shot, leave-one-style-out average, %",
            "b2n_clipood_h": "CLIPood base-to-new harmonic mean H",
        },
    ),
    # --- issue: Hateful-Memes-style hidden links ------------------------------------------------
    Study(
        name="hidden_links",
        notebook="06_hidden_links.py",
        title="Hidden links: Hateful-Memes-style finetuning",
        profiles={
            "smoke": {
                "seeds": [0],
                "n_train": 64,
                "n_val": 16,
                "n_test": 16,
                "steps": 6,
                "eval_every": 3,
                "aux_counts": [0, 2],
                "cam_counts": [0, 2],
                "cam_memes": 4,
            },
            "full": {
                "dataset": "hateful_memes",
                "steps": 2000,
                "eval_every": 250,
                "lrs": [1e-05, 1e-06],
            },
        },
        headline={
            "auroc_ft": "memes only: AUROC on hidden-link memes, %",
            "auroc_ft_shown": "memes only: AUROC on shown-link memes, %",
            "auroc_align": "+ alignment: AUROC on hidden-link memes, %",
            "auroc_chain": "+ self-learning + alignment: AUROC on hidden-link memes, %",
        },
    ),
    # --- issue: decoding frozen features --------------------------------------------------------
    Study(
        name="feature_decoding",
        notebook="07_feature_decoding.py",
        title="What frozen features contain",
        profiles={
            "smoke": {
                "dataset_options": {"per_class": [4, 2, 4]},
                "seeds": [0],
                "vq_steps": 6,
                "seg_steps": 6,
                "eval_every": 3,
                "batch_size": 8,
                "n_codes": 8,
                "code_dim": 8,
                "hidden": 16,
                "n_show": 4,
            },
            "full": {
                "vq_dataset": "cifar10",
                "seg_dataset": "oxford_pets",
                "ood_dataset": "",
                "dataset_options": {"max_per_split": 1500},
                "recon_size": 28,
                "vq_steps": 3000,
                "seg_steps": 3000,
                "eval_every": 100,
                "batch_size": 64,
                "vq_lr": 0.001,
                "seg_lr": 0.001,
                "n_codes": 512,
                "code_dim": 64,
                "decay": 0.99,
                "hidden": 128,
                "unet_base": 32,
            },
        },
        headline={
            "seg_miou_clip": "segmentation from frozen CLIP features, test mIoU %",
            "seg_miou_random": "segmentation from a random tower, test mIoU %",
            "vq_psnr_clip": "VQ-VAE from frozen CLIP features, test PSNR dB",
            "vq_psnr_own": "VQ-VAE with a trained encoder, test PSNR dB",
        },
    ),
    # --- issue: clustering and label noise ------------------------------------------------------
    Study(
        name="clustering",
        notebook="08_clustering.py",
        title="Clustering and label noise",
        profiles={
            "smoke": {
                "datasets": ["world-shape-sketch"],
                "dataset_options": {"world-shape-sketch": {"per_class": [5, 5, 16]}},
                "umap_components": 5,
                "shots": [1, 5],
                "noise_levels": [0.0, 0.4],
                "probe_cs": [1.0, 10.0],
                "seeds": [0],
            },
            "full": {
                "backbones": [
                    "clip",
                    "resnet50",
                    "vit_b_32",
                    "convnext_tiny",
                    "efficientnet_b0",
                    "pixels",
                ],
                "datasets": ["flowers102", "fgvc_aircraft"],
                # The colour control is the generated world's; real datasets have no such twin.
                "control_datasets": [],
                "focus_dataset": "fgvc_aircraft",
                # Flowers102's torchvision train split has 10 images per class: no 25-shot draw.
                "shots": [1, 5, 10],
            },
        },
        headline={
            "clip_avg": "clustering average score, CLIP (mean over datasets)",
            "best_other_avg": "clustering average score, best other backbone",
            "focus_clip_avg": "clustering average score, CLIP, focus dataset (held-out style)",
            "clip_noise_drop": "CLIP probe accuracy lost at the highest label noise, points",
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
