"""Domain-generalisation and open-class splits: leave-one-domain-out and base-to-new.

*Leave one domain out* (DomainBed's protocol): a benchmark is a set of domains sharing one label
space; for each domain in turn, train and select on the others and test on the one left out. The
embedded benchmark is the generated world, whose four rendering styles are the domains
(``world-shape-photo``, ``world-shape-sketch``, ...); the full profile's PACS and OfficeHome already
hold the split out in their loaders (``load_dataset("pacs", test_domain=...)``).

*Base to new* (CoOp/CoCoOp/CLIPood): the classes are cut in half; a model is trained on the first
half (base) and tested on both halves, each half classified among its own class names only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipnb.core.imagesets import DatasetSplits, ImageSet, ImageSource
from clipnb.core.utils import stable_hash
from clipnb.data.registry import load_dataset

#: Multi-domain datasets whose loader takes ``test_domain=`` (DomainBed layout), with their domains.
DOMAINBED_DOMAINS: dict[str, tuple[str, ...]] = {}


def _domainbed_domains() -> dict[str, tuple[str, ...]]:
    if not DOMAINBED_DOMAINS:
        from clipnb.data.full import OFFICE_HOME_DOMAINS, PACS_DOMAINS

        DOMAINBED_DOMAINS.update({"pacs": PACS_DOMAINS, "office_home": OFFICE_HOME_DOMAINS})
    return DOMAINBED_DOMAINS


@dataclass(frozen=True)
class Benchmark:
    """A domain-generalisation benchmark: a name and its domains.

    ``datasets`` maps each domain to the registered single-domain dataset holding it; it is empty
    for a multi-domain (DomainBed) dataset, which is loaded once per held-out domain.
    """

    name: str
    domains: tuple[str, ...]
    datasets: dict[str, str]

    @property
    def multi_domain(self) -> bool:
        return not self.datasets


def domain_benchmarks(names: Sequence[str]) -> list[Benchmark]:
    """Group dataset names into benchmarks, in order of first appearance.

    ``world-<task>-<style>`` names with the same task form one benchmark (the styles are its
    domains, at least two); a DomainBed dataset name (``pacs``, ``office_home``) is a benchmark
    on its own.
    """
    from clipnb.data import world

    grouped: dict[str, dict[str, str]] = {}
    out: list[str] = []
    domainbed = _domainbed_domains()
    for name in names:
        if name in domainbed:
            if name in grouped:
                raise ValueError(f"{name!r} is listed twice.")
            grouped[name] = {}
            out.append(name)
            continue
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == "world" and parts[2] in world.STYLES:
            bench = f"world-{parts[1]}"
            if bench not in grouped:
                grouped[bench] = {}
                out.append(bench)
            if parts[2] in grouped[bench]:
                raise ValueError(f"{name!r} is listed twice.")
            grouped[bench][parts[2]] = name
            continue
        raise ValueError(
            f"{name!r} is not a domain dataset. Use world-<task>-<style> names (one per domain) or "
            f"a DomainBed dataset ({', '.join(domainbed)})."
        )
    benchmarks = []
    for bench in out:
        datasets = grouped[bench]
        if datasets and len(datasets) < 2:
            raise ValueError(
                f"{bench}: leave-one-domain-out needs at least two domains, got {list(datasets)}."
            )
        domains = tuple(datasets) if datasets else domainbed[bench]
        benchmarks.append(Benchmark(bench, domains, dict(datasets)))
    return benchmarks


class _ChainedSource(ImageSource):
    """Random access over several image sets, one after the other."""

    def __init__(self, sets: Sequence[ImageSet]) -> None:
        self._sets = list(sets)
        self._offsets = np.cumsum([0, *(len(s) for s in self._sets)])
        super().__init__(self._get, int(self._offsets[-1]))

    def _get(self, index: int):
        k = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return self._sets[k].image(index - int(self._offsets[k]))


def concat_sets(name: str, sets: Sequence[ImageSet], domain_ids: Sequence[int]) -> ImageSet:
    """One set holding ``sets`` in order, with ``domains`` = the given id of each part.

    Every part must share the class names; the fingerprint is derived from the parts'.
    """
    if not sets:
        raise ValueError("concat_sets needs at least one set.")
    classes = sets[0].class_names
    for s in sets[1:]:
        if list(s.class_names) != list(classes):
            raise ValueError(f"{s.name} has other class names than {sets[0].name}.")
    if all(isinstance(s.images, np.ndarray) for s in sets):
        images: np.ndarray | ImageSource = np.concatenate([s.images for s in sets])
    else:
        images = _ChainedSource(sets)
    domains = np.concatenate(
        [np.full(len(s), d, dtype=np.int64) for s, d in zip(sets, domain_ids, strict=True)]
    )
    return ImageSet(
        name=name,
        images=images,
        labels=np.concatenate([s.labels for s in sets]),
        class_names=list(classes),
        fingerprint=stable_hash(["concat", [s.fingerprint for s in sets], list(domain_ids)]),
        domains=domains,
    )


def leave_one_domain_out(benchmark: Benchmark, held_out: str, **options: Any) -> DatasetSplits:
    """Train/val from every domain but ``held_out``, test = ``held_out``'s test split.

    For a multi-domain (DomainBed) dataset this is its own loader with ``test_domain=held_out``
    (train/val carved 80/20 from the other domains, test = all of the held-out domain). For the
    world, train and val concatenate the other styles' train and val splits and the test split is
    the held-out style's own test split (the same set object, so its cached features are reused).
    ``options`` go to every ``load_dataset`` call. The returned splits carry ``domains`` (indices
    into ``meta["domain_names"]``) and ``meta["test_domain"]``.
    """
    if held_out not in benchmark.domains:
        raise ValueError(
            f"{benchmark.name}: held-out domain must be one of {list(benchmark.domains)}, "
            f"not {held_out!r}."
        )
    held = benchmark.domains.index(held_out)
    if benchmark.multi_domain:
        data = load_dataset(benchmark.name, test_domain=held_out, **options)
        names = list(data.train.meta.get("domain_names", benchmark.domains))
        for split in (data.train, data.val):
            if split.domains is not None and np.any(split.domains == names.index(held_out)):
                raise RuntimeError(f"{benchmark.name}: {held_out} leaked into {split.name}.")
        return data
    loaded = {d: load_dataset(benchmark.datasets[d], **options) for d in benchmark.domains}
    train_domains = [d for d in benchmark.domains if d != held_out]
    ids = [benchmark.domains.index(d) for d in train_domains]
    tag = f"{benchmark.name}[-{held_out}]"
    meta = {"domain_names": list(benchmark.domains), "test_domain": held_out}
    train = concat_sets(f"{tag}/train", [loaded[d].train for d in train_domains], ids)
    val = concat_sets(f"{tag}/val", [loaded[d].val for d in train_domains], ids)
    test = loaded[held_out].test
    train.meta, val.meta = dict(meta), dict(meta)
    if test.domains is None:
        test = _with_domain(test, held)
    return DatasetSplits(
        tag,
        list(loaded[held_out].class_names),
        train,
        val,
        test,
        description=f"{benchmark.name}, {held_out} held out as test",
    )


def _with_domain(split: ImageSet, domain: int) -> ImageSet:
    """``split`` with a constant ``domains`` array (same fingerprint: the images are unchanged)."""
    from dataclasses import replace

    return replace(split, domains=np.full(len(split), domain, dtype=np.int64))


# --- base to new ---------------------------------------------------------------------------------


def base_new_classes(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """CoOp's split: the first ``ceil(n / 2)`` class indices are base, the rest new."""
    if n_classes < 2:
        raise ValueError(f"base-to-new needs at least two classes, got {n_classes}.")
    m = math.ceil(n_classes / 2)
    return np.arange(m), np.arange(m, n_classes)


def class_subset(split: ImageSet, classes: Sequence[int], name: str | None = None) -> ImageSet:
    """The rows of ``classes``, relabelled ``0..k-1`` in the given order, with only their names."""
    classes = [int(c) for c in classes]
    rows = np.flatnonzero(np.isin(split.labels, classes))
    sub = split.subset(rows, name=name or f"{split.name}[classes {classes[0]}..{classes[-1]}]")
    remap = {c: i for i, c in enumerate(classes)}
    labels = np.array([remap[int(y)] for y in sub.labels], dtype=np.int64)
    return sub.with_labels(labels, [split.class_names[c] for c in classes], name=sub.name)


def base_to_new(data: DatasetSplits) -> tuple[DatasetSplits, DatasetSplits]:
    """``data`` restricted to its base classes and to its new classes (CoOp's halves)."""
    halves = []
    for tag, classes in zip(("base", "new"), base_new_classes(len(data.class_names)), strict=True):
        sets = [
            class_subset(data.split(s), classes, f"{data.name}/{tag}/{s}")
            for s in ("train", "val", "test")
        ]
        halves.append(
            DatasetSplits(
                f"{data.name}/{tag}",
                [data.class_names[c] for c in classes],
                *sets,
                description=f"{data.description} ({tag} classes)",
            )
        )
    return halves[0], halves[1]


def harmonic_mean(a: float, b: float) -> float:
    """``H = 2ab / (a + b)`` (0 when both are 0), the base-to-new summary."""
    return 0.0 if a + b == 0 else 2.0 * a * b / (a + b)
