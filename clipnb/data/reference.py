"""Published numbers the full profile is compared against (see ``shared/REFERENCE.md``).

Keys are the ``reference_key`` of the registered full-profile datasets (``clipnb.data.registry.DATASETS``),
so a chapter looks a number up by dataset name with :func:`reference_for`. The embedded profile's
datasets have no published counterpart (the handwritten digits map to "MNIST" only as an analogue
and are shown without a reference).
"""

from __future__ import annotations

from collections.abc import Mapping

#: Zero-shot top-1 (%) of open_clip ``ViT-B-32`` with OpenAI weights (open_clip's results table;
#: CLIP_benchmark agrees within about 0.5). The 80-template prompt ensemble is used there.
ZERO_SHOT_VIT_B32: dict[str, float] = {
    "ImageNet": 63.3,
    "CIFAR-10": 89.8,
    "CIFAR-100": 64.2,
    "MNIST": 48.4,
    "Flowers102": 66.7,
    "Oxford Pets": 87.0,
    "EuroSAT": 50.4,
}

#: Source report 000, Table 1: its own CLIP zero-shot numbers (%).
SOURCE_000_ZERO_SHOT: dict[str, float] = {
    "Food101": 80.7,
    "CIFAR-100": 61.8,
    "MNIST": 32.63,
    "Flowers102": 51.9,
    "Animals90": 86.0,
}

#: Source report 000, Table 1: the ResNet50 column (a linear probe on ImageNet ResNet50 features).
SOURCE_000_RESNET50: dict[str, float] = {
    "Food101": 61.87,
    "CIFAR-100": 61.67,
    "MNIST": 94.54,
    "Flowers102": 77.96,
    "Animals90": 95.28,
}

#: Source blog 002 on CIFAR-100 with ViT-B/32: zero-shot and the logistic-regression probe.
SOURCE_002_CIFAR100: dict[str, float] = {
    "zero_shot": 61.68,
    "linear_probe": 79.92,
    "probe_C": 0.316,
}


def reference_for(dataset: str, table: Mapping[str, float] = ZERO_SHOT_VIT_B32) -> float | None:
    """The published number of ``table`` for a full-profile dataset name, or ``None``.

    Only full-profile datasets have references; embedded datasets (even the MNIST-like digits)
    return ``None``.
    """
    from clipnb.data.registry import DATASETS

    spec = DATASETS.get(dataset)
    if spec is None or spec.profile != "full" or spec.reference_key is None:
        return None
    return table.get(spec.reference_key)
