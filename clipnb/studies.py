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
        profiles={},
        headline={},
    ),
    # --- issue: zero-shot-initialised few-shot head -------------------------------------------
    Study(
        name="few_shot_init",
        notebook="02_few_shot_init.py",
        title="Few-shot initialisation",
        profiles={},
        headline={},
    ),
    # --- issue: finetuning each part, and Grad-CAM --------------------------------------------
    Study(
        name="finetune_parts",
        notebook="03_finetune_parts.py",
        title="Finetuning each part of CLIP",
        profiles={},
        headline={},
    ),
    # --- issue: Tip-Adapter ---------------------------------------------------------------------
    Study(
        name="tip_adapter",
        notebook="04_tip_adapter.py",
        title="Tip-Adapter",
        profiles={},
        headline={},
    ),
    # --- issue: CLIPood -------------------------------------------------------------------------
    Study(
        name="clipood",
        notebook="05_clipood.py",
        title="CLIPood under domain shift",
        profiles={},
        headline={},
    ),
    # --- issue: Hateful-Memes-style hidden links ------------------------------------------------
    Study(
        name="hidden_links",
        notebook="06_hidden_links.py",
        title="Hidden links: Hateful-Memes-style finetuning",
        profiles={},
        headline={},
    ),
    # --- issue: decoding frozen features --------------------------------------------------------
    Study(
        name="feature_decoding",
        notebook="07_feature_decoding.py",
        title="What frozen features contain",
        profiles={},
        headline={},
    ),
    # --- issue: clustering and label noise ------------------------------------------------------
    Study(
        name="clustering",
        notebook="08_clustering.py",
        title="Clustering and label noise",
        profiles={},
        headline={},
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
