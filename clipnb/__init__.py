"""clipnb: how CLIP behaves out of distribution, and how to adapt it.

The package behind the clipnb report: open_clip models (pretrained or the project's own embedded
CLIP), datasets with fixed splits, a feature cache, the adaptation methods and the study runner.
"""

from __future__ import annotations

from .offline import block_network, offline_requested

if offline_requested():
    block_network()

from . import datasets_full  # noqa: F401  (registers the full profile's datasets)
from .data import (
    DatasetNotFoundError,
    DatasetSplits,
    ImageSet,
    few_shot,
    few_shot_indices,
    list_datasets,
    load_dataset,
)
from .evaluation import accuracy, fit_linear_probe, select_on_validation, zero_shot_logits
from .features import (
    ENSEMBLE_TEMPLATES,
    SINGLE_TEMPLATE,
    class_embeddings,
    encode_images,
    encode_texts,
)
from .models import ClipBundle, UnknownModelError, create_model, list_models
from .utils import seed_everything

__version__ = "0.1.0"

__all__ = [
    "ENSEMBLE_TEMPLATES",
    "SINGLE_TEMPLATE",
    "ClipBundle",
    "DatasetNotFoundError",
    "DatasetSplits",
    "ImageSet",
    "UnknownModelError",
    "accuracy",
    "class_embeddings",
    "create_model",
    "encode_images",
    "encode_texts",
    "few_shot",
    "few_shot_indices",
    "fit_linear_probe",
    "list_datasets",
    "list_models",
    "load_dataset",
    "seed_everything",
    "select_on_validation",
    "zero_shot_logits",
]

from . import memes  # noqa: F401
