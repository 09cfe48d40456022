"""clipnb: how CLIP behaves out of distribution, and how to adapt it.

The package behind the clipnb report: open_clip models (pretrained or the project's own embedded
CLIP), datasets with fixed splits, a feature cache, the adaptation methods and the study runner.
"""

from __future__ import annotations

from clipnb.core.offline import block_network, offline_requested

if offline_requested():
    block_network()

from clipnb.core.evaluation import (
    accuracy,
    fit_linear_probe,
    select_on_validation,
    zero_shot_logits,
)
from clipnb.core.features import (
    ENSEMBLE_TEMPLATES,
    SINGLE_TEMPLATE,
    class_embeddings,
    encode_images,
    encode_texts,
)
from clipnb.core.imagesets import (
    DatasetNotFoundError,
    DatasetSplits,
    ImageSet,
    few_shot,
    few_shot_indices,
)
from clipnb.core.models import ClipBundle, UnknownModelError, create_model, list_models
from clipnb.core.utils import seed_everything
from clipnb.data.registry import list_datasets, load_dataset, register_all
from clipnb.methods.backbones import load_model

register_all()  # every dataset, in one explicit call

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
    "load_model",
    "seed_everything",
    "select_on_validation",
    "zero_shot_logits",
]
