from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import clipnb
from clipnb.core.models import UnknownModelError, WeightsNotFoundError, create_model, model_parts


def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownModelError, match="clipnb-ViT-32px"):
        create_model("ViT-Z-99")


def test_project_models_are_open_clip_models():
    assert "clipnb-ViT-32px" in clipnb.list_models()
    bundle = create_model("clipnb-ViT-tiny")
    assert bundle.image_size == 32
    assert bundle.tokenize(["a red circle"]).shape == (1, 16)


def test_local_checkpoint_roundtrip_and_fingerprint(tmp_path):
    torch.manual_seed(0)
    a = create_model("clipnb-ViT-tiny")
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": a.model.state_dict()}, path)
    b = create_model("clipnb-ViT-tiny", pretrained=path)
    for (name, pa), (_, pb) in zip(
        a.model.state_dict().items(), b.model.state_dict().items(), strict=True
    ):
        assert torch.equal(pa, pb), name
    # Same bytes, same fingerprint; a changed checkpoint changes it (so caches never go stale).
    assert create_model("clipnb-ViT-tiny", pretrained=path).fingerprint == b.fingerprint
    state = a.model.state_dict()
    state["logit_scale"] = state["logit_scale"] + 1
    torch.save({"state_dict": state}, path)
    assert create_model("clipnb-ViT-tiny", pretrained=path).fingerprint != b.fingerprint
    assert b.fingerprint != a.fingerprint  # random init differs from a file


def test_missing_checkpoint_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        create_model("clipnb-ViT-tiny", pretrained=str(tmp_path / "nope" / "x.pt"))


def test_weights_tag_offline_is_a_clear_error():
    # HF_HUB_OFFLINE=1 and the socket guard: a tag that is not cached must fail with a fix.
    with pytest.raises(WeightsNotFoundError, match="file path"):
        create_model("RN50", pretrained="openai", cache_dir="/nonexistent-cache")


def test_model_parts_partition_the_parameters():
    model = create_model("clipnb-ViT-tiny").model
    parts = model_parts(model)
    ids = [id(p) for ps in parts.values() for p in ps]
    assert len(ids) == len(set(ids)), "parts overlap"
    rest = {n for n, p in model.named_parameters() if id(p) not in set(ids)}
    assert rest == {"logit_scale"}
    assert all(parts[k] for k in parts)


def test_network_is_refused_in_offline_profiles():
    code = (
        "import socket, clipnb\n"
        "s = socket.socket()\n"
        "try:\n"
        "    s.connect(('198.51.100.7', 80))\n"
        "except clipnb.core.offline.NetworkBlockedError:\n"
        "    print('blocked')\n"
    )
    env = {"CLIPNB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "blocked", out.stderr
