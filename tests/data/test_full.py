"""Tests for clipnb.datasets_full: every full-profile loader on tiny fixtures in the real layouts."""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from clipnb.core.imagesets import DatasetNotFoundError, ImageSource, few_shot
from clipnb.data import full as full
from clipnb.data.registry import DATASETS, DIGIT_WORDS, list_datasets, load_dataset
from tests import fixtures as fx

NAMES = [
    "mnist",
    "cifar10",
    "cifar100",
    "flowers102",
    "food101",
    "oxford_pets",
    "animals",
    "pacs",
    "office_home",
    "hateful_memes",
]

#: name -> (train, val, test sizes, class names, image height/width)
EXPECTED = {
    "mnist": ((27, 3, 9), list(DIGIT_WORDS), 8),
    "cifar10": ((27, 3, 9), fx.CIFAR10_NAMES, 32),
    "cifar100": ((27, 3, 9), ["apple", "aquarium fish", "baby"], 32),
    "flowers102": ((6, 3, 9), ["flower class 1", "flower class 2", "flower class 3"], 8),
    "food101": ((27, 3, 6), ["apple pie", "baby back ribs", "caesar salad"], 16),
    "oxford_pets": ((27, 3, 6), ["abyssinian", "american bulldog", "bengal"], 16),
    "animals": ((18, 6, 6), ["antelope", "polar bear", "zebra"], 8),
    "pacs": ((24, 8, 8), ["dog", "guitar"], 8),
    "office_home": ((24, 8, 8), ["Alarm Clock", "Desk Lamp"], 8),
    "hateful_memes": ((6, 4, 4), ["not hateful", "hateful"], 8),
}


def build(name: str, root: Path, **options):
    return load_dataset(name, root=root, **options)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def red(image: np.ndarray) -> float:
    return float(np.median(image[..., 0]))


# --- every loader ----------------------------------------------------------------------------------


def test_all_registered_as_full() -> None:
    assert set(NAMES) <= set(list_datasets("full"))
    for name in NAMES:
        spec = DATASETS[name]
        assert spec.profile == "full" and spec.layout and spec.description


@pytest.mark.parametrize("name", NAMES)
def test_loader_reads_fixture(name: str, root: Path) -> None:
    fx.WRITERS[name](root)
    ds = build(name, root)
    sizes, class_names, side = EXPECTED[name]
    assert ds.name == name
    assert (len(ds.train), len(ds.val), len(ds.test)) == sizes
    assert ds.class_names == class_names
    fingerprints = set()
    for split in ("train", "val", "test"):
        s = ds.split(split)
        assert isinstance(s.images, ImageSource)
        assert s.labels.dtype == np.int64
        assert s.class_names == class_names
        assert s.labels.min() >= 0 and s.labels.max() < len(class_names)
        assert len(np.unique(s.labels)) == (3 if len(class_names) > 2 else 2)
        fingerprints.add(s.fingerprint)
        for i in (0, len(s) - 1):
            image = s.array(i)
            assert image.shape == (side, side, 3) and image.dtype == np.uint8
            # the fixture's red channel encodes the label: images and labels line up
            assert abs(red(image) - fx.shade(int(s.labels[i]))) <= 12
    assert len(fingerprints) == 3


def test_torchvision_reads_the_same_fixtures(root: Path) -> None:
    from torchvision.datasets import MNIST, Food101, OxfordIIITPet

    fx.write_mnist(root)
    fx.write_food101(root)
    fx.write_oxford_pets(root)
    mnist = build("mnist", root)
    tv = MNIST(str(root), train=False, download=False)
    assert np.array_equal(tv.targets.numpy(), mnist.test.labels)
    assert np.array_equal(np.asarray(tv[4][0].convert("RGB")), mnist.test.array(4))
    food = build("food101", root)
    tv_food = Food101(str(root), split="test", download=False)
    assert [c.replace("_", " ") for c in tv_food.classes] == food.class_names
    assert sorted(tv_food._labels) == sorted(food.test.labels.tolist())
    pets = build("oxford_pets", root)
    tv_pets = OxfordIIITPet(str(root), split="test", download=False)
    assert [c.lower() for c in tv_pets.classes] == pets.class_names
    assert tv_pets._labels == pets.test.labels.tolist()


# --- specific layouts ------------------------------------------------------------------------------


def test_flowers_torchvision_split_and_names(root: Path) -> None:
    fx.write_flowers102(root, with_names=True)
    ds = build("flowers102", root)
    assert ds.class_names == list(fx.FLOWER_NAMES.values())
    assert [len(s) for s in (ds.train, ds.val, ds.test)] == [3 * n for n in fx.FLOWER_TV_PER_CLASS]
    assert "torchvision" in ds.description


def test_flowers_prefers_coop_split(root: Path) -> None:
    fx.write_flowers102(root)
    fx.write_flowers102_coop(root)
    ds = build("flowers102", root)
    assert "coop" in ds.description
    assert [len(s) for s in (ds.train, ds.val, ds.test)] == [
        3 * n for n in fx.FLOWER_COOP_PER_CLASS
    ]
    assert ds.class_names == list(fx.FLOWER_NAMES.values())
    for i in range(len(ds.test)):
        assert abs(red(ds.test.array(i)) - fx.shade(int(ds.test.labels[i]))) <= 12
    forced = build("flowers102", root, split="torchvision")
    assert [len(s) for s in (forced.train, forced.val, forced.test)] == [6, 3, 9]
    assert forced.test.fingerprint != ds.test.fingerprint
    with pytest.raises(ValueError, match="split must be"):
        build("flowers102", root, split="zhou")


def test_flowers_coop_folder_without_split_json_names_the_files(root: Path) -> None:
    fx.write_flowers102_coop(root)
    (root / "oxford_flowers" / "split_zhou_OxfordFlowers.json").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"setid\.mat.*split_zhou_OxfordFlowers\.json"):
        build("flowers102", root)


def test_pets_coop_split_and_trimaps(root: Path) -> None:
    fx.write_oxford_pets_coop(root)
    ds = build("oxford_pets", root)
    assert "coop" in ds.description
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 6, 12)
    assert ds.class_names == ["abyssinian", "american bulldog", "bengal"]
    tri = ds.test.meta["trimap"](0)
    assert tri.dtype == np.uint8 and tri.shape == ds.test.array(0).shape[:2]
    assert set(np.unique(tri)) == {1, 2, 3}


def test_trimap_helper_follows_subsets(root: Path) -> None:
    folder = fx.write_oxford_pets(root)
    ds = build("oxford_pets", root)
    stem = Path(ds.train.images._load.paths[5]).stem
    marked = np.full((16, 16), 3, dtype=np.uint8)
    from PIL import Image

    Image.fromarray(marked).save(folder / "annotations" / "trimaps" / f"{stem}.png")
    sub = ds.train.subset([3, 5])
    assert np.all(full.trimap(sub, 1) == 3)
    assert np.all(full.trimap(ds.train, 5) == 3)
    shot = few_shot(ds.train, 1, seed=0)
    for i in range(len(shot)):
        assert full.trimap(shot, i).shape == (16, 16)
    fx.write_animals(root)
    with pytest.raises(ValueError, match="only the oxford_pets"):
        full.trimap(build("animals", root).train, 0)
    shutil.rmtree(folder / "annotations" / "trimaps")
    with pytest.raises(DatasetNotFoundError, match=r"annotations\.tar\.gz"):
        ds.test.meta["trimap"](0)


def test_domainbed_domains_and_stratified_split(root: Path) -> None:
    fx.write_pacs(root)
    ds = build("pacs", root)
    assert ds.test.meta["domain_names"] == list(full.PACS_DOMAINS)
    for s, per_stratum in ((ds.train, 3), (ds.val, 1), (ds.test, 1)):
        assert s.domains is not None and s.domains.dtype == np.int64
        pairs, counts = np.unique(np.stack([s.domains, s.labels]), axis=1, return_counts=True)
        assert pairs.shape[1] == 8 and np.all(counts == per_stratum)
        for i in range(len(s)):
            assert abs(red(s.array(i)) - fx.shade(int(s.labels[i]))) <= 12


def test_domainbed_held_out_domain(root: Path) -> None:
    fx.write_office_home(root)
    ds = build("office_home", root, test_domain="Real World")
    held = full.OFFICE_HOME_DOMAINS.index("Real World")
    assert np.all(ds.test.domains == held) and len(ds.test) == 10
    assert not np.any(ds.train.domains == held) and not np.any(ds.val.domains == held)
    assert (len(ds.train), len(ds.val)) == (24, 6)
    assert ds.test.meta["test_domain"] == "Real World"
    with pytest.raises(ValueError, match="test_domain must be one of"):
        build("office_home", root, test_domain="RealWorld")


def test_domainbed_mismatched_classes(root: Path) -> None:
    folder = fx.write_pacs(root)
    shutil.rmtree(folder / "sketch" / "guitar")
    with pytest.raises(DatasetNotFoundError, match=r"different class folders.*guitar"):
        build("pacs", root)


def test_hateful_memes_texts_and_labels(root: Path) -> None:
    fx.write_hateful_memes(root)
    ds = build("hateful_memes", root)
    assert ds.train.texts == [f"caption {10000 + k}" for k in range(1, 7)]
    assert ds.train.labels.tolist() == [0, 1, 0, 1, 0, 1]
    sub = ds.val.subset([1])
    assert sub.texts == [ds.val.texts[1]]


def test_hateful_memes_unlabelled_test_file_is_named(root: Path) -> None:
    folder = fx.write_hateful_memes(root)
    (folder / "test_seen.jsonl").write_text('{"id": 1, "img": "img/10011.png", "text": "x"}\n')
    with pytest.raises(
        DatasetNotFoundError, match=r"test_seen\.jsonl:1 lacks the field\(s\) \['label'\]"
    ):
        build("hateful_memes", root)


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_missing_folder_names_the_layout(name: str, root: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        build(name, root)
    message = str(err.value)
    assert "Expected layout under the data root" in message
    assert DATASETS[name].layout.splitlines()[0] in message


def test_missing_data_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="DATA=/path/to/datasets"):
        build("mnist", tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("name", "remove", "named"),
    [
        ("mnist", "MNIST/raw/t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"),
        ("cifar10", "cifar-10-batches-py/data_batch_3", "data_batch_3"),
        ("cifar100", "cifar-100-python/meta", "cifar-100-python/meta"),
        ("flowers102", "flowers-102/imagelabels.mat", "imagelabels.mat"),
        ("oxford_pets", "oxford-iiit-pet/annotations/test.txt", "test.txt"),
        ("hateful_memes", "hateful_memes/dev_seen.jsonl", "dev_seen.jsonl"),
    ],
)
def test_missing_index_file_is_named(name: str, remove: str, named: str, root: Path) -> None:
    fx.WRITERS[name](root)
    (root / remove).unlink()
    with pytest.raises(
        DatasetNotFoundError, match=rf"required file .*{re.escape(named)}.* is missing"
    ):
        build(name, root)


def test_food_missing_split_list_is_named(root: Path) -> None:
    folder = fx.write_food101(root)
    (folder / "meta" / "train.json").unlink()
    assert len(build("food101", root).train) == 27  # falls back on train.txt
    (folder / "meta" / "train.txt").unlink()
    with pytest.raises(
        DatasetNotFoundError, match=r"meta/train\.json \(or train\.txt\) is missing"
    ):
        build("food101", root)


def test_gzipped_mnist_gets_a_hint(root: Path) -> None:
    raw = fx.write_mnist(root)
    path = raw / "train-images-idx3-ubyte"
    path.rename(path.with_name(path.name + ".gz"))
    with pytest.raises(DatasetNotFoundError, match="gunzip"):
        build("mnist", root)


def test_wrong_magic_number(root: Path) -> None:
    raw = fx.write_mnist(root)
    path = raw / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x1f\x8b" + path.read_bytes()[2:])
    with pytest.raises(DatasetNotFoundError, match="magic number 2049"):
        build("mnist", root)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_error_names_the_file(damage: str, root: Path) -> None:
    folder = fx.write_animals(root)
    bad = folder / "zebra" / "zebra_004.jpg"
    data = bad.read_bytes()
    bad.write_bytes(b"not a jpeg at all" if damage == "garbage" else data[: len(data) // 2])
    ds = build("animals", root)  # lazy: building never decodes
    split = next(s for s in (ds.train, ds.val, ds.test) if str(bad) in s.images._load.paths)
    i = split.images._load.paths.index(str(bad))
    with pytest.raises(full.CorruptImageError, match=rf"{re.escape(str(bad))}.*delete it"):
        split.image(i)
    with pytest.raises(OSError):  # still an OSError for callers that catch those
        split.image(i)


def test_missing_image_file_is_named(root: Path) -> None:
    fx.write_food101(root)
    ds = build("food101", root)
    path = Path(ds.test.images._load.paths[0])
    path.unlink()
    with pytest.raises(
        DatasetNotFoundError, match=rf"{re.escape(str(path))} is missing.*Re-extract"
    ):
        ds.test.image(0)


def test_empty_class_folder_is_named(root: Path) -> None:
    folder = fx.write_animals(root)
    (folder / "unicorn").mkdir()
    (folder / "unicorn" / "notes.txt").write_text("no images here")
    with pytest.raises(
        DatasetNotFoundError,
        match=rf"class folder {re.escape(str(folder / 'unicorn'))} holds no images",
    ):
        build("animals", root)


def test_bad_options(root: Path) -> None:
    fx.write_animals(root)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['shots'\].*max_per_split"):
        build("animals", root, shots=4)
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match="max_per_split must be a positive integer"):
            build("animals", root, max_per_split=bad)


# --- determinism and fingerprints -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "cifar10", "food101", "animals", "pacs"])
def test_carved_splits_are_deterministic_and_disjoint(name: str, root: Path) -> None:
    fx.WRITERS[name](root)
    a, b = build(name, root), build(name, root)
    for split in ("train", "val", "test"):
        sa, sb = a.split(split), b.split(split)
        assert sa.fingerprint == sb.fingerprint
        assert np.array_equal(sa.labels, sb.labels)
        assert all(np.array_equal(sa.array(i), sb.array(i)) for i in range(len(sa)))
    if name in ("food101", "animals", "pacs"):
        paths = [set(a.split(s).images._load.paths) for s in ("train", "val", "test")]
        assert not (paths[0] & paths[1]) and not (paths[0] & paths[2]) and not (paths[1] & paths[2])
    else:
        rows = [set(a.split(s).images._load.rows.tolist()) for s in ("train", "val")]
        assert not (rows[0] & rows[1]) and len(rows[0] | rows[1]) == 30


def _bump(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def test_fingerprint_changes_when_an_index_file_changes(root: Path) -> None:
    fx.write_hateful_memes(root)
    fx.write_mnist(root)
    before = build("hateful_memes", root)
    _bump(root / "hateful_memes" / "dev_seen.jsonl")
    after = build("hateful_memes", root)
    assert all(
        before.split(s).fingerprint != after.split(s).fingerprint for s in ("train", "val", "test")
    )
    m_before = build("mnist", root)
    _bump(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte")
    assert build("mnist", root).test.fingerprint != m_before.test.fingerprint


def test_fingerprint_changes_when_an_image_changes(root: Path) -> None:
    folder = fx.write_animals(root)
    before = build("animals", root)
    path = Path(before.test.images._load.paths[0])
    fx.save_image(path, 0, 99, size=16)
    after = build("animals", root)
    assert after.test.fingerprint != before.test.fingerprint
    assert after.train.fingerprint == before.train.fingerprint  # other splits unaffected
    (folder / "zebra" / "zebra_000.jpg").unlink()
    assert build("animals", root).test.fingerprint != after.test.fingerprint


def test_max_per_split_is_stratified_and_deterministic(root: Path) -> None:
    fx.write_pacs(root)
    fx.write_cifar10(root)
    full_ds = build("pacs", root)
    small = build("pacs", root, max_per_split=8)
    again = build("pacs", root, max_per_split=np.int64(8))
    assert (len(small.train), len(small.val), len(small.test)) == (8, 8, 8)
    assert len(np.unique(np.stack([small.train.domains, small.train.labels]), axis=1)[0]) == 8
    assert small.train.fingerprint == again.train.fingerprint != full_ds.train.fingerprint
    assert small.test.fingerprint == full_ds.test.fingerprint  # 8 rows already: unchanged
    cifar = build("cifar10", root, max_per_split=5)
    assert [len(s) for s in (cifar.train, cifar.val, cifar.test)] == [5, 3, 5]
    assert set(cifar.train.labels.tolist()) == {0, 1, 2}


def test_lazy_sources_pickle(root: Path) -> None:
    fx.write_mnist(root)
    fx.write_cifar100(root)
    for name in ("mnist", "cifar100"):
        test = build(name, root).test
        first = test.array(2)
        clone = pickle.loads(pickle.dumps(test.images))
        assert np.array_equal(np.asarray(clone[2]), first)
