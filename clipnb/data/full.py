"""The full profile's datasets, read lazily from the user's data root (``DATA=``).

Each loader accepts an on-disk layout peers already use (torchvision's, CoOp's, DomainBed's, the
Hateful Memes release) and returns :class:`~clipnb.core.imagesets.DatasetSplits` whose images are decoded
only when asked for. Nothing is ever downloaded: a missing folder or file raises a
:class:`~clipnb.core.imagesets.DatasetNotFoundError` that shows the expected layout.

Splits: a dataset's own val split is used where it has one; otherwise a validation split is carved
from train (90/10, stratified by class, seed :data:`~clipnb.core.imagesets.SPLIT_SEED`). ImageFolder and
DomainBed datasets are split 60/20/20 (DomainBed stratified by domain and class). Every build
accepts ``max_per_split`` to keep a deterministic, stratified subsample of each split.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipnb.core.imagesets import (
    SPLIT_SEED,
    DatasetNotFoundError,
    DatasetSplits,
    ImageSet,
    ImageSource,
    stratified_split,
)
from clipnb.core.utils import array_hash, stable_hash
from clipnb.data.registry import DIGIT_WORDS, DatasetSpec, register_dataset, require_folder

#: Bumped when the way a fingerprint is computed changes (so old cache entries are not reused).
FINGERPRINT_VERSION = 1

#: File endings treated as images when scanning ImageFolder / DomainBed folders.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

SPLITS = ("train", "val", "test")


class CorruptImageError(OSError):
    """An image file exists but cannot be decoded."""


# --- reading images lazily -----------------------------------------------------------------------


def open_rgb(path: str | os.PathLike, dataset: str) -> Image.Image:
    """Decode one image file as RGB, turning decoder failures into one clear error."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError as err:
        raise DatasetNotFoundError(
            f"{dataset}: image {path} is missing although the dataset's index lists it. "
            "Re-extract the dataset archive into the data root."
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(
            f"{dataset}: cannot read image {path} ({type(err).__name__}: {err}). The file is corrupt "
            "or truncated: delete it (ImageFolder datasets) or re-extract the dataset archive."
        ) from err


class _FileImages:
    """``index -> RGB image`` over a list of files (picklable, unlike a lambda)."""

    def __init__(self, dataset: str, paths: Sequence[Path]) -> None:
        self.dataset = dataset
        self.paths = [str(p) for p in paths]

    def __call__(self, i: int) -> Image.Image:
        return open_rgb(self.paths[i], self.dataset)


class _IdxImages:
    """``index -> RGB image`` over rows of an uncompressed MNIST idx3 file, memory-mapped."""

    def __init__(self, path: Path, shape: tuple[int, int, int], rows: np.ndarray) -> None:
        self.path = str(path)
        self.shape = shape
        self.rows = np.asarray(rows, dtype=np.int64)
        self._map: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_map": None}

    def __call__(self, i: int) -> Image.Image:
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r", offset=16, shape=self.shape)
        return Image.fromarray(np.array(self._map[self.rows[i]])).convert("RGB")


class _CifarImages:
    """``index -> RGB image`` over CIFAR pickles; keeps only the last-read file in memory."""

    def __init__(
        self,
        dataset: str,
        layout: str,
        files: Sequence[Path],
        counts: Sequence[int],
        rows: np.ndarray,
    ) -> None:
        self.dataset = dataset
        self.layout = layout
        self.files = [str(f) for f in files]
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.rows = np.asarray(rows, dtype=np.int64)
        self._current: tuple[int, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_current": None}

    def __call__(self, i: int) -> Image.Image:
        row = int(self.rows[i])
        f = int(np.searchsorted(self.starts, row, side="right")) - 1
        if self._current is None or self._current[0] != f:
            batch = _read_cifar_pickle(Path(self.files[f]), self.dataset, self.layout, ("data",))
            self._current = (f, _cifar_pixels(batch, Path(self.files[f]), self.dataset))
        pixels = self._current[1][row - self.starts[f]]
        return Image.fromarray(pixels.reshape(3, 32, 32).transpose(1, 2, 0))


class _Trimaps:
    """``index -> uint8 [H,W] trimap`` (1 pet, 2 background, 3 border) of Oxford Pets images."""

    def __init__(self, dataset: str, folder: Path, stems: Sequence[str]) -> None:
        self.dataset = dataset
        self.folder = str(folder)
        self.stems = list(stems)

    def __call__(self, i: int) -> np.ndarray:
        folder = Path(self.folder)
        if not folder.is_dir():
            raise DatasetNotFoundError(
                f"{self.dataset}: the trimaps folder {folder} is missing (only segmentation needs it). "
                "Extract the Oxford-IIIT Pet annotations.tar.gz next to images/."
            )
        path = folder / f"{self.stems[i]}.png"
        try:
            with Image.open(path) as im:
                arr = np.array(im)
        except FileNotFoundError as err:
            raise DatasetNotFoundError(
                f"{self.dataset}: trimap {path} is missing. Re-extract annotations.tar.gz."
            ) from err
        except (OSError, SyntaxError, ValueError) as err:
            raise CorruptImageError(
                f"{self.dataset}: cannot read trimap {path} ({err}). Delete it and re-extract "
                "annotations.tar.gz."
            ) from err
        if arr.ndim == 3:
            arr = arr[..., 0]
        return arr.astype(np.uint8)


def trimap(split: ImageSet, i: int) -> np.ndarray:
    """The Oxford Pets trimap of row ``i`` of ``split`` (or of any subset of a split)."""
    root = split.root or split
    if "trimap" not in root.meta:
        raise ValueError(
            f"{split.name} has no trimaps: only the oxford_pets dataset provides them."
        )
    index = int(split.indices[i]) if split.indices is not None else int(i)
    return root.meta["trimap"](index)


# --- small helpers ---------------------------------------------------------------------------------


def _readable(name: str) -> str:
    return name.replace("_", " ").strip()


def _layout_error(dataset: str, message: str, layout: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{dataset}: {message} Expected layout under the data root:\n{layout}"
    )


def _require_file(path: Path, dataset: str, layout: str, hint: str = "") -> Path:
    """``path`` if it is a file, else a :class:`DatasetNotFoundError` naming it and the layout."""
    if path.is_file():
        return path
    gz = path.with_name(path.name + ".gz")
    if gz.is_file():
        hint = f" Found {gz.name}: unpack it first (gunzip -k {gz}).{hint}"
    raise _layout_error(dataset, f"required file {path} is missing.{hint}", layout)


def _file_identity(paths: Sequence[Path], base: Path) -> list[list[Any]]:
    """Cheap content identity of files: relative name, size and modification time."""
    out = []
    for p in paths:
        st = p.stat()
        out.append([os.path.relpath(p, base), st.st_size, st.st_mtime_ns])
    return out


def _fingerprint(dataset: str, split: str, items: Any, identity: Any, options: Any = None) -> str:
    return stable_hash(
        {
            "dataset": dataset,
            "split": split,
            "items": items,
            "identity": identity,
            "options": options,
            "version": FINGERPRINT_VERSION,
        }
    )


def _keep(strata: np.ndarray, limit: int | None, seed: int = SPLIT_SEED) -> np.ndarray:
    """Sorted indices of a deterministic, stratified subsample of exactly ``min(limit, N)`` rows."""
    n = len(strata)
    if limit is None or n <= limit:
        return np.arange(n, dtype=np.int64)
    _, inverse = np.unique(strata, return_inverse=True)
    counts = np.bincount(inverse)
    quota = counts * (limit / n)
    take = np.floor(quota).astype(np.int64)
    short = limit - int(take.sum())
    take[np.argsort(-(quota - take), kind="stable")[:short]] += 1
    rng = np.random.default_rng(seed)
    chosen = []
    for k, t in enumerate(take):
        idx = np.flatnonzero(inverse == k)
        chosen.append(idx[rng.permutation(len(idx))[:t]])
    return np.sort(np.concatenate(chosen))


def _strata(labels: np.ndarray, domains: np.ndarray | None) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    if domains is None:
        return labels
    return np.asarray(domains, dtype=np.int64) * (int(labels.max(initial=0)) + 1) + labels


@dataclass
class _Rows:
    """Rows of a file-based split: image paths, labels and optional domains/texts."""

    paths: list[Path]
    labels: np.ndarray
    domains: np.ndarray | None = None
    texts: list[str] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)

    def take(self, idx: np.ndarray) -> _Rows:
        return _Rows(
            [self.paths[i] for i in idx],
            self.labels[idx],
            None if self.domains is None else self.domains[idx],
            None if self.texts is None else [self.texts[i] for i in idx],
        )


def _file_set(
    dataset: str,
    split: str,
    base: Path,
    rows: _Rows,
    class_names: list[str],
    identity: Any,
    max_per_split: int | None,
    meta: Callable[[_Rows], dict[str, Any]] | None = None,
    options: Any = None,
) -> ImageSet:
    rows = rows.take(_keep(_strata(rows.labels, rows.domains), max_per_split))
    names = [Path(os.path.relpath(p, base)).as_posix() for p in rows.paths]
    return ImageSet(
        name=f"{dataset}/{split}",
        images=ImageSource(_FileImages(dataset, rows.paths), len(rows.paths)),
        labels=rows.labels,
        class_names=class_names,
        fingerprint=_fingerprint(dataset, split, names, identity, options),
        domains=rows.domains,
        texts=rows.texts,
        meta={} if meta is None else meta(rows),
    )


def _carve(rows: _Rows, fractions: Sequence[float]) -> list[_Rows]:
    """Split ``rows`` by ``fractions``, stratified by (domain,) class, with the fixed split seed."""
    parts = stratified_split(_strata(rows.labels, rows.domains), fractions, seed=SPLIT_SEED)
    return [rows.take(p) for p in parts]


def _splits(
    dataset: str, class_names: list[str], sets: Sequence[ImageSet], description: str
) -> DatasetSplits:
    train, val, test = sets
    return DatasetSplits(dataset, class_names, train, val, test, description=description)


def _read_json(path: Path, dataset: str, layout: str) -> Any:
    _require_file(path, dataset, layout)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _layout_error(
            dataset,
            f"{path} is not valid JSON ({err}); re-extract or re-download that file.",
            layout,
        ) from err


def _loadmat(path: Path, dataset: str, layout: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    _require_file(path, dataset, layout)
    try:
        content = loadmat(path, squeeze_me=True)
    except Exception as err:  # scipy raises several unrelated types for a broken .mat
        raise _layout_error(
            dataset, f"cannot read {path} ({err}); re-extract or re-download that file.", layout
        ) from err
    missing = [k for k in keys if k not in content]
    if missing:
        raise _layout_error(
            dataset, f"{path} lacks the variable(s) {missing}; is it the right file?", layout
        )
    return {k: np.atleast_1d(content[k]).astype(np.int64) for k in keys}


def _scan_class_folders(folder: Path, dataset: str, layout: str) -> list[tuple[str, list[Path]]]:
    """``[(class folder name, sorted image paths)]`` of an ImageFolder, classes sorted by name."""
    classes = sorted(
        e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")
    )
    if not classes:
        raise _layout_error(dataset, f"{folder} holds no class folders.", layout)
    out = []
    for name in classes:
        files = []
        for dirpath, dirnames, filenames in os.walk(folder / name):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files.extend(
                Path(dirpath) / f
                for f in filenames
                if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
            )
        if not files:
            raise DatasetNotFoundError(
                f"{dataset}: class folder {folder / name} holds no images "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))}). Put its images back or delete the folder."
            )
        out.append((name, sorted(files)))
    return out


# --- MNIST -------------------------------------------------------------------------------------------

MNIST_LAYOUT = """\
MNIST/raw/train-images-idx3-ubyte
MNIST/raw/train-labels-idx1-ubyte
MNIST/raw/t10k-images-idx3-ubyte
MNIST/raw/t10k-labels-idx1-ubyte
(torchvision's MNIST layout, with the .gz files unpacked)"""


def _idx_header(path: Path, magic: int, ndim: int) -> list[int]:
    with open(path, "rb") as fh:
        head = fh.read(4 * (ndim + 1))
    values = [int.from_bytes(head[k : k + 4], "big") for k in range(0, len(head), 4)]
    if len(values) != ndim + 1 or values[0] != magic:
        raise _layout_error(
            "mnist",
            f"{path} is not an idx file with magic number {magic} (is it still gzipped, or "
            "truncated?). Re-extract it.",
            MNIST_LAYOUT,
        )
    expected = 4 * (ndim + 1) + int(np.prod(values[1:]))
    if path.stat().st_size != expected:
        raise _layout_error(
            "mnist",
            f"{path} has {path.stat().st_size} bytes, expected {expected}; re-extract it.",
            MNIST_LAYOUT,
        )
    return values[1:]


def build_mnist(root: Path, *, max_per_split: int | None = None) -> DatasetSplits:
    """MNIST: 60,000 train (val carved 90/10) and 10,000 test digits, from torchvision's raw files."""
    raw = require_folder(root / "MNIST" / "raw", "mnist", MNIST_LAYOUT)
    files = {}
    for part in ("train", "t10k"):
        images = _require_file(raw / f"{part}-images-idx3-ubyte", "mnist", MNIST_LAYOUT)
        labels_file = _require_file(raw / f"{part}-labels-idx1-ubyte", "mnist", MNIST_LAYOUT)
        shape = tuple(_idx_header(images, 2051, 3))
        (n_labels,) = _idx_header(labels_file, 2049, 1)
        if n_labels != shape[0]:
            raise _layout_error(
                "mnist",
                f"{images} has {shape[0]} images but {labels_file} {n_labels} labels; "
                "re-extract both.",
                MNIST_LAYOUT,
            )
        labels = np.fromfile(labels_file, dtype=np.uint8, offset=8).astype(np.int64)
        if labels.size and labels.max() > 9:
            raise _layout_error(
                "mnist", f"{labels_file} has labels above 9; re-extract it.", MNIST_LAYOUT
            )
        files[part] = (images, shape, labels, [images, labels_file])
    train_rows, val_rows = stratified_split(files["train"][2], (0.9, 0.1), seed=SPLIT_SEED)
    test_rows = np.arange(len(files["t10k"][2]), dtype=np.int64)
    sets = []
    for split, part, rows in (
        ("train", "train", train_rows),
        ("val", "train", val_rows),
        ("test", "t10k", test_rows),
    ):
        images, shape, labels, index_files = files[part]
        rows = rows[_keep(labels[rows], max_per_split)]
        sets.append(
            ImageSet(
                name=f"mnist/{split}",
                images=ImageSource(_IdxImages(images, shape, rows), len(rows)),
                labels=labels[rows],
                class_names=list(DIGIT_WORDS),
                fingerprint=_fingerprint(
                    "mnist",
                    split,
                    [int(shape[0]), array_hash(rows)],
                    _file_identity(index_files, root),
                ),
            )
        )
    return _splits("mnist", list(DIGIT_WORDS), sets, "MNIST handwritten digits")


# --- CIFAR ---------------------------------------------------------------------------------------------

CIFAR10_LAYOUT = """\
cifar-10-batches-py/data_batch_1 ... data_batch_5
cifar-10-batches-py/test_batch
cifar-10-batches-py/batches.meta
(torchvision's layout: cifar-10-python.tar.gz extracted)"""

CIFAR100_LAYOUT = """\
cifar-100-python/train
cifar-100-python/test
cifar-100-python/meta
(torchvision's layout: cifar-100-python.tar.gz extracted)"""


def _read_cifar_pickle(
    path: Path, dataset: str, layout: str, keys: Sequence[str]
) -> dict[str, Any]:
    _require_file(path, dataset, layout)
    try:
        with open(path, "rb") as fh:
            raw = pickle.load(fh, encoding="latin1")
    except Exception as err:  # unpickling raises many types for a damaged file
        raise _layout_error(
            dataset,
            f"cannot unpickle {path} ({type(err).__name__}: {err}); re-extract the archive.",
            layout,
        ) from err
    if not isinstance(raw, dict):
        raise _layout_error(
            dataset, f"{path} does not hold a dict; re-extract the archive.", layout
        )
    content = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
    missing = [k for k in keys if k not in content]
    if missing:
        raise _layout_error(
            dataset, f"{path} lacks the key(s) {missing}; is it the right file?", layout
        )
    return content


def _cifar_pixels(batch: dict[str, Any], path: Path, dataset: str) -> np.ndarray:
    data = np.asarray(batch["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetNotFoundError(
            f"{dataset}: {path} holds data of shape {data.shape}, expected [N, 3072]; re-extract it."
        )
    return data


def _build_cifar(
    root: Path,
    dataset: str,
    folder_name: str,
    train_files: Sequence[str],
    test_file: str,
    meta_file: str,
    names_key: str,
    labels_key: str,
    layout: str,
    max_per_split: int | None,
) -> DatasetSplits:
    folder = require_folder(root / folder_name, dataset, layout)
    meta = _read_cifar_pickle(folder / meta_file, dataset, layout, (names_key,))
    class_names = [_readable(str(n)) for n in meta[names_key]]

    def read(names: Sequence[str]) -> tuple[list[Path], list[int], np.ndarray]:
        paths, counts, labels = [], [], []
        for name in names:
            path = folder / name
            batch = _read_cifar_pickle(path, dataset, layout, ("data", labels_key))
            lab = np.asarray(batch[labels_key], dtype=np.int64)
            if len(lab) != len(batch["data"]):
                raise DatasetNotFoundError(
                    f"{dataset}: {path} has {len(batch['data'])} images but {len(lab)} labels; "
                    "re-extract it."
                )
            paths.append(path)
            counts.append(len(lab))
            labels.append(lab)
        return paths, counts, np.concatenate(labels)

    train = read(train_files)
    test = read([test_file])
    for labels in (train[2], test[2]):
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise DatasetNotFoundError(
                f"{dataset}: labels outside 0..{len(class_names) - 1} (the classes in {meta_file}); "
                "re-extract the archive."
            )
    identity = _file_identity([folder / meta_file, *train[0], *test[0]], root)
    train_rows, val_rows = stratified_split(train[2], (0.9, 0.1), seed=SPLIT_SEED)
    sets = []
    for split, (paths, counts, labels), rows in (
        ("train", train, train_rows),
        ("val", train, val_rows),
        ("test", test, np.arange(len(test[2]), dtype=np.int64)),
    ):
        rows = rows[_keep(labels[rows], max_per_split)]
        sets.append(
            ImageSet(
                name=f"{dataset}/{split}",
                images=ImageSource(_CifarImages(dataset, layout, paths, counts, rows), len(rows)),
                labels=labels[rows],
                class_names=class_names,
                fingerprint=_fingerprint(dataset, split, [len(labels), array_hash(rows)], identity),
            )
        )
    return _splits(dataset, class_names, sets, dataset.upper())


def build_cifar10(root: Path, *, max_per_split: int | None = None) -> DatasetSplits:
    """CIFAR-10 from torchvision's python pickles; val carved 90/10 from the 50,000 train images."""
    return _build_cifar(
        root,
        "cifar10",
        "cifar-10-batches-py",
        [f"data_batch_{k}" for k in range(1, 6)],
        "test_batch",
        "batches.meta",
        "label_names",
        "labels",
        CIFAR10_LAYOUT,
        max_per_split,
    )


def build_cifar100(root: Path, *, max_per_split: int | None = None) -> DatasetSplits:
    """CIFAR-100 (fine labels) from torchvision's python pickles; val carved 90/10 from train."""
    return _build_cifar(
        root,
        "cifar100",
        "cifar-100-python",
        ["train"],
        "test",
        "meta",
        "fine_label_names",
        "fine_labels",
        CIFAR100_LAYOUT,
        max_per_split,
    )


# --- CoOp split files --------------------------------------------------------------------------------


def _read_coop_split(
    path: Path, dataset: str, layout: str, image_dirs: Sequence[Path]
) -> tuple[dict[str, tuple[list[Path], np.ndarray]], dict[int, str]]:
    """CoOp's ``split_zhou_*.json``: per split the image paths and labels, and label -> class name."""
    content = _read_json(path, dataset, layout)
    if not isinstance(content, dict) or any(s not in content for s in SPLITS):
        raise _layout_error(dataset, f"{path} must hold 'train', 'val' and 'test' lists.", layout)
    names: dict[int, str] = {}
    entries: dict[str, list[tuple[str, int]]] = {}
    for split in SPLITS:
        entries[split] = []
        for k, entry in enumerate(content[split]):
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[1], int)):
                raise _layout_error(
                    dataset,
                    f"{path}: entry {k} of {split!r} is {entry!r}, expected "
                    "[relative path, label, class name].",
                    layout,
                )
            entries[split].append((str(entry[0]), entry[1]))
            names.setdefault(entry[1], _readable(str(entry[2])))
    first = next((rel for s in SPLITS for rel, _ in entries[s]), None)
    image_dir = image_dirs[0]
    if first is not None:
        found = [d for d in image_dirs if (d / first).is_file()]
        if not found:
            tried = " or ".join(str(d / first) for d in image_dirs)
            raise _layout_error(
                dataset, f"{path} lists {first!r} but {tried} does not exist.", layout
            )
        image_dir = found[0]
    out = {
        s: (
            [image_dir / rel for rel, _ in entries[s]],
            np.array([lab for _, lab in entries[s]], dtype=np.int64),
        )
        for s in SPLITS
    }
    return out, names


def _check_split_option(dataset: str, split: str) -> None:
    if split not in ("auto", "coop", "torchvision"):
        raise ValueError(
            f"{dataset}: split must be 'auto' (CoOp's split json when present, else torchvision's), "
            f"'coop' or 'torchvision', not {split!r}."
        )


# --- Flowers102 ----------------------------------------------------------------------------------------

FLOWERS_LAYOUT = """\
torchvision's layout:
  flowers-102/jpg/image_00001.jpg ... image_08189.jpg
  flowers-102/imagelabels.mat
  flowers-102/setid.mat            (trnid = train, valid = val, tstid = test: 6,149 images)
  flowers-102/cat_to_name.json     (optional: class names)
or CoOp's layout (its split is preferred when present):
  oxford_flowers/jpg/image_00001.jpg ...
  oxford_flowers/imagelabels.mat
  oxford_flowers/cat_to_name.json
  oxford_flowers/split_zhou_OxfordFlowers.json"""


def build_flowers102(
    root: Path, *, split: str = "auto", max_per_split: int | None = None
) -> DatasetSplits:
    """Oxford Flowers102: CoOp's split json when present (``split='auto'``), else torchvision's setid.mat."""
    _check_split_option("flowers102", split)
    tv, coop = root / "flowers-102", root / "oxford_flowers"
    coop_json = coop / "split_zhou_OxfordFlowers.json"
    use_coop = split == "coop" or (split == "auto" and coop_json.is_file())
    if use_coop:
        folder = require_folder(coop, "flowers102", FLOWERS_LAYOUT)
    else:
        folder = require_folder(
            tv if tv.exists() or not coop.exists() else coop, "flowers102", FLOWERS_LAYOUT
        )
    cat_files = [folder / "cat_to_name.json", (tv if folder == coop else coop) / "cat_to_name.json"]
    cat_file = next((f for f in cat_files if f.is_file()), None)
    cat_to_name = {} if cat_file is None else _read_json(cat_file, "flowers102", FLOWERS_LAYOUT)
    if not isinstance(cat_to_name, dict):
        raise _layout_error(
            "flowers102", f"{cat_file} must map class ids ('1'..'102') to names.", FLOWERS_LAYOUT
        )
    index_files = [] if cat_file is None else [cat_file]

    if use_coop:
        per_split, json_names = _read_coop_split(
            _require_file(coop_json, "flowers102", FLOWERS_LAYOUT),
            "flowers102",
            FLOWERS_LAYOUT,
            [coop / "jpg", coop],
        )
        index_files.append(coop_json)
        n_classes = 1 + max(int(lab.max(initial=-1)) for _, lab in per_split.values())
        names = {
            c: _readable(str(cat_to_name.get(str(c + 1), f"flower class {c + 1}")))
            for c in range(n_classes)
        }
        names.update(json_names)
    else:
        hint = "" if folder == tv else f" (or add CoOp's {coop_json.name})"
        setid_path = _require_file(folder / "setid.mat", "flowers102", FLOWERS_LAYOUT, hint)
        labels_path = folder / "imagelabels.mat"
        all_labels = _loadmat(labels_path, "flowers102", FLOWERS_LAYOUT, ["labels"])["labels"] - 1
        setid = _loadmat(setid_path, "flowers102", FLOWERS_LAYOUT, ["trnid", "valid", "tstid"])
        index_files += [labels_path, setid_path]
        per_split = {}
        for s, key in zip(SPLITS, ("trnid", "valid", "tstid"), strict=True):
            ids = setid[key]
            if ids.size and (ids.min() < 1 or ids.max() > len(all_labels)):
                raise _layout_error(
                    "flowers102",
                    f"{setid_path} refers to images outside 1..{len(all_labels)} "
                    f"(the images in {labels_path.name}); re-download both .mat files.",
                    FLOWERS_LAYOUT,
                )
            per_split[s] = (
                [folder / "jpg" / f"image_{i:05d}.jpg" for i in ids],
                all_labels[ids - 1],
            )
        n_classes = int(all_labels.max()) + 1
        names = {
            c: _readable(str(cat_to_name.get(str(c + 1), f"flower class {c + 1}")))
            for c in range(n_classes)
        }
    class_names = [names[c] for c in range(n_classes)]
    identity = _file_identity(index_files, root)
    source = "coop" if use_coop else "torchvision"
    sets = [
        _file_set(
            "flowers102",
            s,
            root,
            _Rows(*per_split[s]),
            class_names,
            identity,
            max_per_split,
            options=source,
        )
        for s in SPLITS
    ]
    return _splits("flowers102", class_names, sets, f"Oxford Flowers102 ({source} split)")


# --- Food101 -------------------------------------------------------------------------------------------

FOOD_LAYOUT = """\
food-101/images/<class>/<id>.jpg
food-101/meta/train.json (or train.txt)   {class: ["<class>/<id>", ...]} (or one "<class>/<id>" a line)
food-101/meta/test.json  (or test.txt)
food-101/meta/classes.txt                 (optional: one class a line)
(torchvision's layout: food-101.tar.gz extracted)"""


def _food_split(meta: Path, split: str) -> tuple[list[str], Path]:
    as_json, as_txt = meta / f"{split}.json", meta / f"{split}.txt"
    if as_json.is_file():
        content = _read_json(as_json, "food101", FOOD_LAYOUT)
        if not isinstance(content, dict):
            raise _layout_error(
                "food101", f"{as_json} must map class names to image lists.", FOOD_LAYOUT
            )
        return [str(rel) for cls in sorted(content) for rel in content[cls]], as_json
    if as_txt.is_file():
        lines = as_txt.read_text(encoding="utf-8").splitlines()
        return [ln.strip() for ln in lines if ln.strip()], as_txt
    raise _layout_error(
        "food101", f"index file {as_json} (or {as_txt.name}) is missing.", FOOD_LAYOUT
    )


def build_food101(root: Path, *, max_per_split: int | None = None) -> DatasetSplits:
    """Food-101: the official train/test lists; val carved 90/10 from train."""
    folder = require_folder(root / "food-101", "food101", FOOD_LAYOUT)
    meta = require_folder(folder / "meta", "food101", FOOD_LAYOUT)
    images = require_folder(folder / "images", "food101", FOOD_LAYOUT)
    train_ids, train_file = _food_split(meta, "train")
    test_ids, test_file = _food_split(meta, "test")
    index_files = [train_file, test_file]
    classes_file = meta / "classes.txt"
    if classes_file.is_file():
        classes = sorted(
            ln.strip() for ln in classes_file.read_text(encoding="utf-8").splitlines() if ln.strip()
        )
        index_files.append(classes_file)
    else:
        classes = sorted({rel.split("/")[0] for rel in train_ids})
    position = {c: k for k, c in enumerate(classes)}

    def rows(ids: list[str], source: Path) -> _Rows:
        labels = []
        for rel in ids:
            cls = rel.split("/")[0]
            if cls not in position or "/" not in rel:
                raise _layout_error(
                    "food101",
                    f"{source} lists {rel!r}, not '<class>/<id>' with a known class.",
                    FOOD_LAYOUT,
                )
            labels.append(position[cls])
        return _Rows(
            [images.joinpath(*f"{rel}.jpg".split("/")) for rel in ids],
            np.array(labels, dtype=np.int64),
        )

    class_names = [_readable(c) for c in classes]
    identity = _file_identity(index_files, root)
    train, val = _carve(rows(train_ids, train_file), (0.9, 0.1))
    test = rows(test_ids, test_file)
    sets = [
        _file_set("food101", s, root, r, class_names, identity, max_per_split)
        for s, r in zip(SPLITS, (train, val, test), strict=True)
    ]
    return _splits("food101", class_names, sets, "Food-101")


# --- Oxford-IIIT Pets ----------------------------------------------------------------------------------

PETS_LAYOUT = """\
torchvision's layout:
  oxford-iiit-pet/images/Abyssinian_1.jpg ...
  oxford-iiit-pet/annotations/trainval.txt   (lines "Abyssinian_1 1 1 1": image, class id, species, breed id)
  oxford-iiit-pet/annotations/test.txt
  oxford-iiit-pet/annotations/trimaps/Abyssinian_1.png   (segmentation trimaps)
or CoOp's layout (its split is preferred when present):
  oxford_pets/images/..., oxford_pets/annotations/..., oxford_pets/split_zhou_OxfordPets.json"""


def _pets_list(path: Path) -> tuple[list[str], np.ndarray]:
    _require_file(path, "oxford_pets", PETS_LAYOUT)
    stems, labels = [], []
    for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) < 1:
            raise _layout_error(
                "oxford_pets",
                f"{path}:{k}: {line!r} is not '<image> <class id> <species> <breed id>'.",
                PETS_LAYOUT,
            )
        stems.append(parts[0])
        labels.append(int(parts[1]) - 1)
    return stems, np.array(labels, dtype=np.int64)


def build_oxford_pets(
    root: Path, *, split: str = "auto", max_per_split: int | None = None
) -> DatasetSplits:
    """Oxford-IIIT Pets (37 breeds): CoOp's split json when present, else trainval (val carved 90/10)/test.

    ``meta["trimap"]`` maps a row of the split to its uint8 trimap; use :func:`trimap` for subsets.
    """
    _check_split_option("oxford_pets", split)
    tv, coop = root / "oxford-iiit-pet", root / "oxford_pets"
    coop_json = coop / "split_zhou_OxfordPets.json"
    use_coop = split == "coop" or (split == "auto" and coop_json.is_file())
    if use_coop:
        folder = require_folder(coop, "oxford_pets", PETS_LAYOUT)
        per_split, json_names = _read_coop_split(
            _require_file(coop_json, "oxford_pets", PETS_LAYOUT),
            "oxford_pets",
            PETS_LAYOUT,
            [coop / "images"],
        )
        n_classes = 1 + max(int(lab.max(initial=-1)) for _, lab in per_split.values())
        class_names = [json_names.get(c, f"pet class {c + 1}") for c in range(n_classes)]
        split_rows = {s: _Rows(*per_split[s]) for s in SPLITS}
        index_files = [coop_json]
    else:
        folder = require_folder(
            tv if tv.exists() or not coop.exists() else coop, "oxford_pets", PETS_LAYOUT
        )
        images = require_folder(folder / "images", "oxford_pets", PETS_LAYOUT)
        index_files = [folder / "annotations" / "trainval.txt", folder / "annotations" / "test.txt"]
        trainval_stems, trainval_labels = _pets_list(index_files[0])
        test_stems, test_labels = _pets_list(index_files[1])
        found: dict[int, str] = {}
        for stem, lab in zip(
            trainval_stems + test_stems, np.concatenate([trainval_labels, test_labels]), strict=True
        ):
            found.setdefault(int(lab), _readable(stem.rsplit("_", 1)[0]).lower())
        n_classes = 1 + max(found, default=-1)
        class_names = [found.get(c, f"pet class {c + 1}") for c in range(n_classes)]
        trainval = _Rows([images / f"{s}.jpg" for s in trainval_stems], trainval_labels)
        train, val = _carve(trainval, (0.9, 0.1))
        split_rows = {
            "train": train,
            "val": val,
            "test": _Rows([images / f"{s}.jpg" for s in test_stems], test_labels),
        }
    trimaps = folder / "annotations" / "trimaps"

    def meta(rows: _Rows) -> dict[str, Any]:
        return {"trimap": _Trimaps("oxford_pets", trimaps, [p.stem for p in rows.paths])}

    identity = _file_identity(index_files, root)
    source = "coop" if use_coop else "torchvision"
    sets = [
        _file_set(
            "oxford_pets",
            s,
            root,
            split_rows[s],
            class_names,
            identity,
            max_per_split,
            meta,
            source,
        )
        for s in SPLITS
    ]
    return _splits("oxford_pets", class_names, sets, f"Oxford-IIIT Pets ({source} split)")


# --- ImageFolder datasets --------------------------------------------------------------------------------

ANIMALS_LAYOUT = """\
animals/<class>/*.jpg   (an ImageFolder, e.g. the Animals-90 images; split 60/20/20 by class)"""


def build_animals(root: Path, *, max_per_split: int | None = None) -> DatasetSplits:
    """An ImageFolder of animal classes (Animals-90 style), split 60/20/20 stratified by class."""
    folder = require_folder(root / "animals", "animals", ANIMALS_LAYOUT)
    classes = _scan_class_folders(folder, "animals", ANIMALS_LAYOUT)
    paths = [p for _, files in classes for p in files]
    labels = np.concatenate(
        [np.full(len(files), c, dtype=np.int64) for c, (_, files) in enumerate(classes)]
    )
    class_names = [_readable(name) for name, _ in classes]
    parts = _carve(_Rows(paths, labels), (0.6, 0.2, 0.2))
    sets = [
        _file_set("animals", s, root, r, class_names, _file_identity(r.paths, root), max_per_split)
        for s, r in zip(SPLITS, parts, strict=True)
    ]
    return _splits("animals", class_names, sets, "Animals (ImageFolder)")


PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
OFFICE_HOME_DOMAINS = ("Art", "Clipart", "Product", "Real World")

PACS_LAYOUT = """\
PACS/art_painting/<class>/*.jpg
PACS/cartoon/<class>/*.jpg
PACS/photo/<class>/*.jpg
PACS/sketch/<class>/*.png
(DomainBed's layout: one ImageFolder per domain, the same classes in each)"""

OFFICE_HOME_LAYOUT = """\
office_home/Art/<class>/*.jpg
office_home/Clipart/<class>/*.jpg
office_home/Product/<class>/*.jpg
office_home/Real World/<class>/*.jpg
(DomainBed's layout: one ImageFolder per domain, the same classes in each)"""


def _build_domainbed(
    root: Path,
    dataset: str,
    folder_name: str,
    domains: Sequence[str],
    layout: str,
    test_domain: str | None,
    max_per_split: int | None,
) -> DatasetSplits:
    if test_domain is not None and test_domain not in domains:
        raise ValueError(
            f"{dataset}: test_domain must be one of {list(domains)}, not {test_domain!r}."
        )
    folder = require_folder(root / folder_name, dataset, layout)
    scanned = {
        d: dict(_scan_class_folders(require_folder(folder / d, dataset, layout), dataset, layout))
        for d in domains
    }
    classes = sorted(scanned[domains[0]])
    for d in domains[1:]:
        if sorted(scanned[d]) != classes:
            missing = sorted(set(classes) ^ set(scanned[d]))
            raise _layout_error(
                dataset,
                f"domains {domains[0]!r} and {d!r} have different class folders "
                f"(differing: {missing}); every domain needs the same classes.",
                layout,
            )
    paths, labels, domain_ids = [], [], []
    for k, d in enumerate(domains):
        for c, name in enumerate(classes):
            files = scanned[d][name]
            paths.extend(files)
            labels.extend([c] * len(files))
            domain_ids.extend([k] * len(files))
    rows = _Rows(paths, np.array(labels), np.array(domain_ids, dtype=np.int64))
    if test_domain is None:
        parts = _carve(rows, (0.6, 0.2, 0.2))
    else:
        held = domains.index(test_domain)
        parts = [
            *_carve(rows.take(np.flatnonzero(rows.domains != held)), (0.8, 0.2)),
            rows.take(np.flatnonzero(rows.domains == held)),
        ]
    class_names = [_readable(c) for c in classes]
    meta = {"domain_names": list(domains), "test_domain": test_domain}
    sets = [
        _file_set(
            dataset,
            s,
            root,
            r,
            class_names,
            _file_identity(r.paths, root),
            max_per_split,
            lambda _rows: dict(meta),
            options={"test_domain": test_domain},
        )
        for s, r in zip(SPLITS, parts, strict=True)
    ]
    held_out = "" if test_domain is None else f", {test_domain} held out as test"
    return _splits(dataset, class_names, sets, f"{dataset} (DomainBed{held_out})")


def build_pacs(
    root: Path, *, test_domain: str | None = None, max_per_split: int | None = None
) -> DatasetSplits:
    """PACS (4 domains × 7 classes): 60/20/20 by (domain, class), or one domain held out as test."""
    return _build_domainbed(
        root, "pacs", "PACS", PACS_DOMAINS, PACS_LAYOUT, test_domain, max_per_split
    )


def build_office_home(
    root: Path, *, test_domain: str | None = None, max_per_split: int | None = None
) -> DatasetSplits:
    """OfficeHome (4 domains × 65 classes): 60/20/20 by (domain, class), or one domain held out."""
    return _build_domainbed(
        root,
        "office_home",
        "office_home",
        OFFICE_HOME_DOMAINS,
        OFFICE_HOME_LAYOUT,
        test_domain,
        max_per_split,
    )


# --- Hateful Memes -----------------------------------------------------------------------------------------

HATEFUL_LAYOUT = """\
hateful_memes/train.jsonl       (one JSON object a line: id, img, label, text)
hateful_memes/dev_seen.jsonl    (the val split)
hateful_memes/test_seen.jsonl   (the test split, with labels)
hateful_memes/img/<id>.png"""

HATEFUL_CLASSES = ["not hateful", "hateful"]


def _read_jsonl(path: Path, base: Path) -> _Rows:
    _require_file(path, "hateful_memes", HATEFUL_LAYOUT)
    paths, labels, texts = [], [], []
    for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise _layout_error(
                "hateful_memes", f"{path}:{k} is not valid JSON ({err}).", HATEFUL_LAYOUT
            ) from err
        missing = [f for f in ("img", "label", "text") if not isinstance(rec, dict) or f not in rec]
        if missing:
            raise _layout_error(
                "hateful_memes",
                f"{path}:{k} lacks the field(s) {missing} (the test split must be "
                "test_seen.jsonl, which has labels).",
                HATEFUL_LAYOUT,
            )
        if rec["label"] not in (0, 1):
            raise _layout_error(
                "hateful_memes",
                f"{path}:{k} has label {rec['label']!r}, not 0 or 1.",
                HATEFUL_LAYOUT,
            )
        paths.append(base.joinpath(*str(rec["img"]).split("/")))
        labels.append(int(rec["label"]))
        texts.append(str(rec["text"]))
    return _Rows(paths, np.array(labels, dtype=np.int64), texts=texts)


def build_hateful_memes(root: Path, *, max_per_split: int | None = None) -> DatasetSplits:
    """Hateful Memes: train / dev_seen / test_seen, images with their captions in ``texts``."""
    folder = require_folder(root / "hateful_memes", "hateful_memes", HATEFUL_LAYOUT)
    require_folder(folder / "img", "hateful_memes", HATEFUL_LAYOUT)
    files = [folder / f for f in ("train.jsonl", "dev_seen.jsonl", "test_seen.jsonl")]
    parts = [_read_jsonl(f, folder) for f in files]
    identity = _file_identity(files, root)
    classes = list(HATEFUL_CLASSES)
    sets = [
        _file_set("hateful_memes", s, root, r, classes, identity, max_per_split)
        for s, r in zip(SPLITS, parts, strict=True)
    ]
    return _splits("hateful_memes", classes, sets, "Hateful Memes (seen splits)")


# --- FGVC-Aircraft ------------------------------------------------------------------------------------

AIRCRAFT_LAYOUT = """\
torchvision's layout (the official fgvc-aircraft-2013b archive):
  fgvc-aircraft-2013b/data/images/<id>.jpg
  fgvc-aircraft-2013b/data/images_variant_train.txt   (lines "<id> <variant name>")
  fgvc-aircraft-2013b/data/images_variant_val.txt
  fgvc-aircraft-2013b/data/images_variant_test.txt
  fgvc-aircraft-2013b/data/variants.txt               (optional: the 100 variant names, in order)
or CoOp's layout: fgvc_aircraft/images/..., fgvc_aircraft/images_variant_{train,val,test}.txt,
fgvc_aircraft/variants.txt"""


def _aircraft_list(path: Path) -> list[tuple[str, str]]:
    _require_file(path, "fgvc_aircraft", AIRCRAFT_LAYOUT)
    rows = []
    for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(" ", 1)
        if len(parts) != 2 or not parts[1].strip():
            raise _layout_error(
                "fgvc_aircraft",
                f"{path} line {k} is {line!r}, not '<image id> <variant name>'.",
                AIRCRAFT_LAYOUT,
            )
        rows.append((parts[0], parts[1].strip()))
    return rows


def build_fgvc_aircraft(root: Path, *, max_per_split: int | None = None) -> DatasetSplits:
    """FGVC-Aircraft, 100 variants: the official train/val/test lists (about 3,333 images each)."""
    tv, coop = root / "fgvc-aircraft-2013b" / "data", root / "fgvc_aircraft"
    folder = require_folder(
        tv if tv.exists() or not coop.exists() else coop, "fgvc_aircraft", AIRCRAFT_LAYOUT
    )
    lists = {s: folder / f"images_variant_{s}.txt" for s in SPLITS}
    per_split = {s: _aircraft_list(path) for s, path in lists.items()}
    index_files = list(lists.values())
    variants_file = folder / "variants.txt"
    if variants_file.is_file():
        lines = variants_file.read_text(encoding="utf-8").splitlines()
        variants = [ln.strip() for ln in lines if ln.strip()]
        index_files.append(variants_file)
    else:
        variants = sorted({name for rows in per_split.values() for _, name in rows})
    position = {v: k for k, v in enumerate(variants)}
    images = require_folder(folder / "images", "fgvc_aircraft", AIRCRAFT_LAYOUT)
    identity = _file_identity(index_files, root)
    sets = []
    for s in SPLITS:
        unknown = sorted({name for _, name in per_split[s]} - set(position))
        if unknown:
            raise _layout_error(
                "fgvc_aircraft",
                f"{lists[s]} names variants missing from {variants_file}: {unknown[:5]}.",
                AIRCRAFT_LAYOUT,
            )
        rows = _Rows(
            [images / f"{image_id}.jpg" for image_id, _ in per_split[s]],
            np.array([position[name] for _, name in per_split[s]], dtype=np.int64),
        )
        sets.append(_file_set("fgvc_aircraft", s, root, rows, variants, identity, max_per_split))
    return _splits("fgvc_aircraft", variants, sets, "FGVC-Aircraft (100 variants)")


# --- registration ------------------------------------------------------------------------------------------


def _checked(
    name: str, build: Callable[..., DatasetSplits], layout: str
) -> Callable[..., DatasetSplits]:
    """``build`` behind checks of the data root and the option names/values."""
    allowed = [p for p in inspect.signature(build).parameters if p != "root"]

    def run(root: str | os.PathLike, **options: Any) -> DatasetSplits:
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise TypeError(f"{name}: unknown option(s) {unknown}; this dataset accepts {allowed}.")
        limit = options.get("max_per_split")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1
        ):
            raise ValueError(
                f"{name}: max_per_split must be a positive integer or None, not {limit!r}."
            )
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DatasetNotFoundError(
                f"{name}: data root {root} is not a folder. Pass DATA=/path/to/datasets (or set "
                f"CLIPNB_DATA) pointing at the folder that holds:\n{layout}"
            )
        return build(root, **options)

    run.__doc__ = build.__doc__
    run.__name__ = build.__name__
    return run


def _register(
    name: str,
    build: Callable[..., DatasetSplits],
    description: str,
    layout: str,
    reference_key: str | None,
) -> None:
    register_dataset(
        DatasetSpec(name, "full", _checked(name, build, layout), description, layout, reference_key)
    )


def register() -> None:
    """Register the full profile's datasets (called once by :func:`clipnb.data.registry.register_all`)."""
    _register(
        "mnist",
        build_mnist,
        "MNIST handwritten digits (60,000 train, 10,000 test)",
        MNIST_LAYOUT,
        "MNIST",
    )
    _register(
        "cifar10",
        build_cifar10,
        "CIFAR-10 (50,000 train, 10,000 test, 32×32)",
        CIFAR10_LAYOUT,
        "CIFAR-10",
    )
    _register(
        "cifar100",
        build_cifar100,
        "CIFAR-100, fine labels (50,000 train, 10,000 test)",
        CIFAR100_LAYOUT,
        "CIFAR-100",
    )
    _register(
        "flowers102",
        build_flowers102,
        "Oxford Flowers102 (CoOp split when present, else torchvision's)",
        FLOWERS_LAYOUT,
        "Flowers102",
    )
    _register(
        "food101", build_food101, "Food-101 (75,750 train, 25,250 test)", FOOD_LAYOUT, "Food101"
    )
    _register(
        "oxford_pets",
        build_oxford_pets,
        "Oxford-IIIT Pets, 37 breeds, with segmentation trimaps",
        PETS_LAYOUT,
        "Oxford Pets",
    )
    _register(
        "animals",
        build_animals,
        "Animals ImageFolder (Animals-90 style), 60/20/20",
        ANIMALS_LAYOUT,
        "Animals90",
    )
    _register(
        "pacs", build_pacs, "PACS, DomainBed layout (4 domains, 7 classes)", PACS_LAYOUT, "PACS"
    )
    _register(
        "office_home",
        build_office_home,
        "OfficeHome, DomainBed layout (4 domains, 65 classes)",
        OFFICE_HOME_LAYOUT,
        "OfficeHome",
    )
    _register(
        "hateful_memes",
        build_hateful_memes,
        "Hateful Memes (images with captions; 2 classes)",
        HATEFUL_LAYOUT,
        None,
    )
    _register(
        "fgvc_aircraft",
        build_fgvc_aircraft,
        "FGVC-Aircraft, 100 variants (official train/val/test lists)",
        AIRCRAFT_LAYOUT,
        None,
    )
