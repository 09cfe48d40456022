"""Writers of tiny datasets in the real on-disk layouts the full profile reads.

Each ``write_*`` function fills a data root with a few 8×8/16×16 (CIFAR: 32×32) images per class and
split, in the exact layout of the real release, and returns the dataset's folder. Image colour
encodes the label (red channel = :func:`shade`), so tests can check images and labels line up.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CIFAR100_NAMES = ["apple", "aquarium_fish", "baby"]
FLOWER_NAMES = {"1": "pink primrose", "2": "hard-leaved pocket orchid", "3": "canterbury bells"}
FOOD_CLASSES = ["apple_pie", "baby_back_ribs", "caesar_salad"]
#: (image prefix, species 1=cat 2=dog, breed id) of the fixture's three pet classes.
PET_BREEDS = [("Abyssinian", 1, 1), ("american_bulldog", 2, 1), ("Bengal", 1, 2)]
ANIMAL_CLASSES = ["antelope", "polar_bear", "zebra"]
PACS_CLASSES = ["dog", "guitar"]
OFFICE_CLASSES = ["Alarm_Clock", "Desk_Lamp"]


def shade(label: int) -> int:
    """The red value that encodes ``label`` in fixture images (distinct for labels 0-9)."""
    return (30 + 70 * label) % 256


def _image(label: int, k: int, size: int) -> Image.Image:
    """A flat image whose red channel encodes ``label``; green/blue vary with ``k``."""
    arr = np.zeros((size, size, 3), dtype=np.uint8)
    arr[..., 0] = shade(label)
    arr[..., 1] = (37 * k) % 256
    arr[..., 2] = (11 * k + 90) % 256
    return Image.fromarray(arr)


def save_image(path: Path, label: int, k: int = 0, size: int = 8) -> Path:
    """Write a fixture image (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = _image(label, k, size)
    if path.suffix in (".jpg", ".jpeg"):
        image.save(path, quality=95)
    else:
        image.save(path)
    return path


# --- MNIST ----------------------------------------------------------------------------------------


def _write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(
    root: Path, per_class: tuple[int, int] = (10, 3), size: int = 8, n_classes: int = 3
) -> Path:
    """``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` with digits 0 .. n_classes-1."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for part, n in zip(("train", "t10k"), per_class, strict=True):
        labels = np.repeat(np.arange(n_classes), n).astype(np.uint8)
        images = np.stack(
            [np.full((size, size), shade(int(lab)), dtype=np.uint8) for lab in labels]
        )
        images[:, 0, 0] = np.arange(len(labels))  # each image distinct
        _write_idx(raw / f"{part}-images-idx3-ubyte", 2051, images)
        _write_idx(raw / f"{part}-labels-idx1-ubyte", 2049, labels)
    return raw


# --- CIFAR ----------------------------------------------------------------------------------------


def _cifar_rows(labels: np.ndarray) -> np.ndarray:
    """CIFAR's [N, 3072] channel-major rows, red channel = shade(label)."""
    rows = np.zeros((len(labels), 3, 32, 32), dtype=np.uint8)
    rows[:, 0] = np.array([shade(int(lab)) for lab in labels])[:, None, None]
    rows[:, 1] = np.arange(len(labels))[:, None, None]
    return rows.reshape(len(labels), -1)


def _pickle(path: Path, obj: dict) -> None:
    path.write_bytes(pickle.dumps(obj))


def write_cifar10(root: Path, per_class_batch: int = 2, per_class_test: int = 3) -> Path:
    """``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` with classes 0, 1, 2."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(1, 6):
        labels = np.repeat(np.arange(3), per_class_batch)
        _pickle(
            folder / f"data_batch_{b}",
            {
                "batch_label": f"training batch {b} of 5",
                "labels": labels.tolist(),
                "data": _cifar_rows(labels),
                "filenames": [f"img_{b}_{i}.png" for i in range(len(labels))],
            },
        )
    labels = np.repeat(np.arange(3), per_class_test)
    _pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": labels.tolist(),
            "data": _cifar_rows(labels),
        },
    )
    _pickle(
        folder / "batches.meta",
        {"label_names": CIFAR10_NAMES, "num_cases_per_batch": 10000, "num_vis": 3072},
    )
    return folder


def write_cifar100(root: Path, per_class: tuple[int, int] = (10, 3)) -> Path:
    """``cifar-100-python/{train, test, meta}`` with three fine classes."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in zip(("train", "test"), per_class, strict=True):
        labels = np.repeat(np.arange(3), n)
        _pickle(
            folder / part,
            {
                "fine_labels": labels.tolist(),
                "coarse_labels": [0] * len(labels),
                "data": _cifar_rows(labels),
            },
        )
    _pickle(folder / "meta", {"fine_label_names": CIFAR100_NAMES, "coarse_label_names": ["fruit"]})
    return folder


# --- Flowers102 -----------------------------------------------------------------------------------

#: torchvision split sizes per class (trnid, valid, tstid) and CoOp's (train, val, test).
FLOWER_TV_PER_CLASS = (2, 1, 3)
FLOWER_COOP_PER_CLASS = (3, 1, 2)


def write_flowers102(
    root: Path, folder_name: str = "flowers-102", with_names: bool = False
) -> Path:
    """torchvision's ``flowers-102/{jpg/image_%05d.jpg, imagelabels.mat, setid.mat}``, 3 classes."""
    from scipy.io import savemat

    folder = root / folder_name
    per_class = sum(FLOWER_TV_PER_CLASS)
    labels = np.repeat(np.arange(1, 4), per_class)  # 1-based, like the release
    for i, lab in enumerate(labels, 1):
        save_image(folder / "jpg" / f"image_{i:05d}.jpg", int(lab) - 1, i)
    ids = {"trnid": [], "valid": [], "tstid": []}
    for c in range(3):
        first = c * per_class + 1
        bounds = np.cumsum([0, *FLOWER_TV_PER_CLASS])
        for key, lo, hi in zip(ids, bounds[:-1], bounds[1:], strict=True):
            ids[key].extend(range(first + lo, first + hi))
    savemat(folder / "imagelabels.mat", {"labels": labels[None, :].astype(np.uint8)})
    savemat(
        folder / "setid.mat", {k: np.array(v, dtype=np.uint16)[None, :] for k, v in ids.items()}
    )
    if with_names:
        (folder / "cat_to_name.json").write_text(json.dumps(FLOWER_NAMES))
    return folder


def write_flowers102_coop(root: Path) -> Path:
    """CoOp's ``oxford_flowers/{jpg, imagelabels.mat, cat_to_name.json, split_zhou_OxfordFlowers.json}``."""
    folder = write_flowers102(root, "oxford_flowers", with_names=True)
    (folder / "setid.mat").unlink()  # CoOp's folder ships without it
    per_class = sum(FLOWER_COOP_PER_CLASS)
    split = {"train": [], "val": [], "test": []}
    bounds = np.cumsum([0, *FLOWER_COOP_PER_CLASS])
    for c in range(3):
        for name, lo, hi in zip(split, bounds[:-1], bounds[1:], strict=True):
            split[name].extend(
                [f"image_{c * per_class + k + 1:05d}.jpg", c, FLOWER_NAMES[str(c + 1)]]
                for k in range(lo, hi)
            )
    (folder / "split_zhou_OxfordFlowers.json").write_text(json.dumps(split))
    return folder


# --- Food101 --------------------------------------------------------------------------------------


def write_food101(root: Path, per_class: tuple[int, int] = (10, 2)) -> Path:
    """``food-101/{images/<class>/<id>.jpg, meta/{train,test}.{json,txt}, meta/classes.txt}``."""
    folder = root / "food-101"
    meta = folder / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    k = 0
    for part, n in zip(("train", "test"), per_class, strict=True):
        listing: dict[str, list[str]] = {}
        for c, cls in enumerate(FOOD_CLASSES):
            listing[cls] = []
            for _ in range(n):
                k += 1
                save_image(folder / "images" / cls / f"{1000 + k}.jpg", c, k, size=16)
                listing[cls].append(f"{cls}/{1000 + k}")
        (meta / f"{part}.json").write_text(json.dumps(listing))
        (meta / f"{part}.txt").write_text("".join(f"{r}\n" for v in listing.values() for r in v))
    (meta / "classes.txt").write_text("".join(f"{c}\n" for c in FOOD_CLASSES))
    (meta / "labels.txt").write_text(
        "".join(f"{c.replace('_', ' ').capitalize()}\n" for c in FOOD_CLASSES)
    )
    return folder


# --- Oxford-IIIT Pets -----------------------------------------------------------------------------


def write_oxford_pets(
    root: Path, per_class: tuple[int, int] = (10, 2), folder_name: str = "oxford-iiit-pet"
) -> Path:
    """torchvision's ``oxford-iiit-pet/{images, annotations/{trainval,test}.txt, annotations/trimaps}``."""
    folder = root / folder_name
    trimaps = folder / "annotations" / "trimaps"
    trimaps.mkdir(parents=True, exist_ok=True)
    k = 0
    for part, n in zip(("trainval", "test"), per_class, strict=True):
        lines = []
        for c, (prefix, species, breed) in enumerate(PET_BREEDS):
            for _ in range(n):
                k += 1
                stem = f"{prefix}_{k}"
                save_image(folder / "images" / f"{stem}.jpg", c, k, size=16)
                tri = np.full((16, 16), 2, dtype=np.uint8)  # background
                tri[4:12, 4:12] = 1  # pet
                tri[4, 4:12] = 3  # border
                Image.fromarray(tri).save(trimaps / f"{stem}.png")
                lines.append(f"{stem} {c + 1} {species} {breed}\n")
        (folder / "annotations" / f"{part}.txt").write_text("".join(lines))
    return folder


def write_oxford_pets_coop(root: Path) -> Path:
    """CoOp's ``oxford_pets/{images, annotations, split_zhou_OxfordPets.json}`` (train/val/test 6/2/4 a class)."""
    folder = write_oxford_pets(root, folder_name="oxford_pets")
    split = {"train": [], "val": [], "test": []}
    for part in ("trainval", "test"):
        for line in (folder / "annotations" / f"{part}.txt").read_text().splitlines():
            stem, cid = line.split()[:2]
            label = int(cid) - 1
            entry = [f"{stem}.jpg", label, stem.rsplit("_", 1)[0].lower()]
            count = sum(e[1] == label for s in split.values() for e in s)
            split["train" if count < 6 else "val" if count < 8 else "test"].append(entry)
    (folder / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    return folder


# --- ImageFolder / DomainBed ----------------------------------------------------------------------


def write_animals(root: Path, per_class: int = 10) -> Path:
    """An ImageFolder ``animals/<class>/*.jpg``."""
    folder = root / "animals"
    for c, cls in enumerate(ANIMAL_CLASSES):
        for i in range(per_class):
            save_image(folder / cls / f"{cls}_{i:03d}.jpg", c, i)
    return folder


def _write_domains(
    folder: Path, domains: tuple[str, ...], classes: list[str], per_class: int
) -> Path:
    for d, domain in enumerate(domains):
        for c, cls in enumerate(classes):
            suffix = ".png" if domain == "sketch" else ".jpg"
            for i in range(per_class):
                save_image(folder / domain / cls / f"pic_{i:03d}{suffix}", c, 10 * d + i)
    return folder


def write_pacs(root: Path, per_class: int = 5) -> Path:
    """DomainBed's ``PACS/{art_painting,cartoon,photo,sketch}/<class>/*``."""
    return _write_domains(
        root / "PACS", ("art_painting", "cartoon", "photo", "sketch"), PACS_CLASSES, per_class
    )


def write_office_home(root: Path, per_class: int = 5) -> Path:
    """DomainBed's ``office_home/{Art,Clipart,Product,Real World}/<class>/*``."""
    return _write_domains(
        root / "office_home", ("Art", "Clipart", "Product", "Real World"), OFFICE_CLASSES, per_class
    )


# --- Hateful Memes --------------------------------------------------------------------------------

#: rows per file: train.jsonl, dev_seen.jsonl, test_seen.jsonl (half of each hateful).
HATEFUL_SIZES = (6, 4, 4)


def write_hateful_memes(root: Path) -> Path:
    """``hateful_memes/{train,dev_seen,test_seen}.jsonl`` and ``img/<id>.png``."""
    folder = root / "hateful_memes"
    k = 0
    for name, n in zip(("train", "dev_seen", "test_seen"), HATEFUL_SIZES, strict=True):
        lines = []
        for i in range(n):
            k += 1
            meme_id = 10000 + k
            label = i % 2
            save_image(folder / "img" / f"{meme_id}.png", label, k)
            lines.append(
                json.dumps(
                    {
                        "id": meme_id,
                        "img": f"img/{meme_id}.png",
                        "label": label,
                        "text": f"caption {meme_id}",
                    }
                )
                + "\n"
            )
        (folder / f"{name}.jsonl").write_text("".join(lines))
    return folder


# --- FGVC-Aircraft ---------------------------------------------------------------------------------

AIRCRAFT_VARIANTS = ["707-320", "A300B4", "Cessna 172"]


def write_fgvc_aircraft(
    root: Path,
    coop: bool = False,
    with_variants: bool = True,
    per_class: tuple[int, int, int] = (4, 2, 3),
) -> Path:
    """torchvision's ``fgvc-aircraft-2013b/data/{images, images_variant_*.txt, variants.txt}``
    (or CoOp's ``fgvc_aircraft/...``), three variants."""
    folder = root / "fgvc_aircraft" if coop else root / "fgvc-aircraft-2013b" / "data"
    image_id = 1000
    for split, n in zip(("train", "val", "test"), per_class, strict=True):
        lines = []
        for label, variant in enumerate(AIRCRAFT_VARIANTS):
            for k in range(n):
                save_image(folder / "images" / f"{image_id}.jpg", label, k)
                lines.append(f"{image_id} {variant}")
                image_id += 1
        (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    if with_variants:
        (folder / "variants.txt").write_text("\n".join(AIRCRAFT_VARIANTS) + "\n")
    return folder


WRITERS = {
    "mnist": write_mnist,
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "flowers102": write_flowers102,
    "food101": write_food101,
    "oxford_pets": write_oxford_pets,
    "animals": write_animals,
    "pacs": write_pacs,
    "office_home": write_office_home,
    "hateful_memes": write_hateful_memes,
    "fgvc_aircraft": write_fgvc_aircraft,
}


# --- a whole data root and offline weights for the full profile ------------------------------------


def write_full_profile_root(root: Path) -> Path:
    """Every dataset the full profile reads, small, in the layouts of the real releases.

    Flowers102 and Oxford Pets come in CoOp's layout (with ``split_zhou_*.json``), the others in
    torchvision's, DomainBed's or the Hateful Memes release's. Sizes are the smallest that leave
    every class at least one validation image after the 90/10 and 60/20/20 carves.
    """
    write_mnist(root, per_class=(5, 2), n_classes=10)  # all ten: chapters pick digits by name
    write_cifar10(root, per_class_batch=1, per_class_test=2)
    write_cifar100(root, per_class=(5, 2))
    write_flowers102_coop(root)
    write_food101(root, per_class=(5, 2))
    write_oxford_pets_coop(root)
    write_animals(root, per_class=5)
    write_pacs(root, per_class=3)  # leave-one-domain-out carves 80/20: 3 leave one for val
    write_office_home(root, per_class=3)
    write_hateful_memes(root)
    write_fgvc_aircraft(root, per_class=(3, 1, 2))
    return root


def save_random_open_clip_weights(hf_cache: Path, name: str, tag: str, seed: int = 0) -> Path:
    """A randomly initialised open_clip model saved where ``pretrained=tag`` finds it offline.

    open_clip resolves a tag through its Hugging Face repo (``hf_hub`` of the tag's config); with
    ``HF_HUB_OFFLINE=1`` the hub client reads ``<cache>/models--<org>--<repo>/refs/main`` and the
    snapshot it names, so that is the layout written here (fp16, like OpenAI's release).
    """
    import open_clip
    import torch
    from safetensors.torch import save_file

    hub = open_clip.get_pretrained_cfg(name, tag).get("hf_hub", "")
    if not hub:
        raise ValueError(f"open_clip has no Hugging Face source for {name} / {tag}")
    # "org/repo/" names the repo's default file; "org/repo/file" a file (as open_clip reads it).
    repo_id, filename = os.path.split(hub)
    filename = filename or "open_clip_model.safetensors"
    repo = hf_cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    state = {k: v.half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, snapshot / filename)
    return snapshot / filename


def save_random_torchvision_weights(name: str, weights_dir: Path, seed: int = 0) -> Path:
    """Random weights of a torchvision backbone under the file name its ImageNet weights have."""
    import torch
    from torchvision.models import get_model

    from clipnb.methods.backbones import TORCHVISION_BACKBONES, torchvision_weights_file

    path = torchvision_weights_file(name, weights_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.save(get_model(TORCHVISION_BACKBONES[name].arch, weights=None).state_dict(), path)
    return path
