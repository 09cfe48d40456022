"""A dry run of the full profile: every notebook, real loaders, a random-weight ViT-B/32.

Nobody here has a GPU, OpenAI's weights or the datasets, so the full profile would otherwise never
run before a user tries it. This test writes tiny datasets in the real on-disk layouts, saves a
randomly initialised ``ViT-B-32-quickgelu`` where open_clip's ``openai`` tag finds it offline (the
Hugging Face cache) and random ImageNet weights where torchvision's are expected, executes every
study in the full profile with small sizes, and builds the book with ``-W -n --keep-going``. It
guards the 224-pixel, 7 × 7-grid, QuickGELU and real-loader code paths that the embedded model
never touches. The numbers are meaningless (random weights); that each chapter runs is the point.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clipnb import registry, runner
from clipnb.methods.backbones import FULL_MODEL
from tests import fixtures as fx
from tests.conftest import run_studies_and_build_book

pytestmark = pytest.mark.slow

#: Per-study parameters on top of the full profile: the fixture's few classes and images, one
#: seed, one learning rate and a few steps. Everything else (datasets, models, code) is the
#: full profile's own.
#: The saliency protocol on a random ViT-B/32 on the CPU: one image per seed, Grad-CAM at the top block.
CAM_DRY_RUN = {"per_seed": 1, "methods": ["GradCAM"], "layer_stride": 12}

DRY_RUN: dict[str, dict[str, Any]] = {
    # The embedded-CLIP chapter pretrains the project's own model whatever the profile (10 min on
    # this CPU in the embedded configuration); nothing in it is full-profile specific, so the dry
    # run takes the smoke pretraining.
    "embedded_clip": {"profile": "smoke", "n_retrieval": 32, "n_per_class": 4},
    "zero_shot": {
        # The prompt ensemble is the chapter's point: 80 templates on two datasets.
        "datasets": ["mnist", "cifar100"],
        "label_probs_datasets": ["cifar100", "mnist"],
        "probe_shots": [1, 2],
        "seeds": [0],
    },
    "few_shot_init": {
        "shots": [1, 2],
        "seeds": [0],
        "epochs": 5,
        "lrs": [0.01],
        "curve_epochs": 5,
    },
    "finetune_parts": {
        # Every finetuned model is also probed with Grad-CAM (a backward pass per image): one
        # shot count and one CAM image keep that to seconds.
        "shots": [[1], [1], [1]],
        "selection_shots": [1, 1, 1],
        "max_per_split": 0,
        "seeds": [0],
        "encoder_lrs": [1e-05],
        "projection_lrs": [0.001],
        "step_grid": [1],
        "batch_size": 2,
        "cam_images": 1,
        "figure_images": 1,
        "cam_protocol": CAM_DRY_RUN,
    },
    "tip_adapter": {
        "shots": [1, 2],
        "table_shots": 2,
        "seeds": [0],
        "alpha_fractions": [0.0, 1.0],
        "betas": [1.0, 5.0],
        "tip_f_epochs": 2,
        "tip_f_lrs": [0.001],
        "head_epochs": 5,
        "head_lrs": [0.01],
        "cam_images": 2,
        "cam_protocol": CAM_DRY_RUN,
    },
    "clipood": {
        "dg_datasets": ["pacs"],
        # Every trial re-encodes its val and test images through the finetuned tower: one
        # base-to-new dataset (CoOp's Pets split), the fixture's two PACS classes.
        "b2n_datasets": ["oxford_pets"],
        "b2n_shots": 1,
        "seeds": [0],
        "steps": [1],
        "lrs": [1e-05],
        "margins": [0.0, 0.1],
        "betas": [1.0],
        "batch_size": 2,
        "curve_points": 1,
    },
    "hidden_links": {
        "seeds": [0],
        "steps": 2,
        "eval_every": 1,
        "lrs": [1e-05],
        "aux_counts": [0],
        "cam_counts": [0],
        "cam_memes": 2,
        "cam_protocol": CAM_DRY_RUN,
    },
    "feature_decoding": {
        "dataset_options": {},
        "seeds": [0],
        "vq_steps": 2,
        "seg_steps": 2,
        "eval_every": 1,
        "batch_size": 4,
        "n_codes": 8,
        "code_dim": 8,
        "hidden": 8,
        "unet_base": 4,
        "n_show": 2,
    },
    "clustering": {
        "backbones": ["clip", "resnet50", "pixels"],
        "umap_components": 2,
        "shots": [1, 2],
        "noise_levels": [0.0, 0.4],
        "probe_cs": [1.0],
        "seeds": [0],
    },
}


@pytest.fixture(scope="module")
def full_profile_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data root, an offline Hugging Face cache and torch hub folder, as a GPU user would have."""
    base = tmp_path_factory.mktemp("full")
    data = fx.write_full_profile_root(base / "data")
    fx.save_random_open_clip_weights(base / "hf", *FULL_MODEL)
    fx.save_random_torchvision_weights("resnet50", base / "torch" / "hub" / "checkpoints")
    mp = pytest.MonkeyPatch()
    # Inherited by the notebook kernels (conftest already sets HF_HUB_OFFLINE and CLIPNB_OFFLINE).
    mp.setenv("CLIPNB_DATA", str(data))
    mp.setenv("HF_HUB_CACHE", str(base / "hf"))
    mp.setenv("TORCH_HOME", str(base / "torch"))
    yield base
    mp.undo()


@pytest.fixture(scope="module")
def full_book(full_profile_env: Path) -> tuple[Path, list[runner.Outcome]]:
    html, outcomes = run_studies_and_build_book(
        full_profile_env / "site" / "book", "full", study_overrides=DRY_RUN, force=True
    )
    print("\n".join(f"{o.study}: {o.status} in {o.seconds:.1f} s" for o in outcomes))
    return html, outcomes


def test_dry_run_covers_every_study() -> None:
    assert set(DRY_RUN) == {s.name for s in registry.STUDIES}


def test_every_chapter_runs_in_the_full_profile_and_the_book_builds(full_book) -> None:
    html, outcomes = full_book
    assert [o.study for o in outcomes] == [s.name for s in registry.STUDIES]
    for study in registry.STUDIES:
        page = html / "executed" / f"{study.name}.html"
        assert study.title in page.read_text(), page
