from __future__ import annotations

import torch
import torch.nn.functional as F

import clipnb
from clipnb.core import features
from clipnb.core.features import class_embeddings, encode_images


def _counting(bundle):
    calls = {"n": 0}
    original = bundle.model.encode_image

    def encode(x):
        calls["n"] += len(x)
        return original(x)

    return encode, calls


def test_second_call_reads_the_cache(fresh_cache):
    bundle = clipnb.create_model("clipnb-ViT-tiny")
    data = clipnb.load_dataset("digits")
    encode, calls = _counting(bundle)
    a = encode_images(bundle, data.val, encode=encode)
    n_first = calls["n"]
    b = encode_images(bundle, data.val, encode=encode)
    assert n_first == len(data.val) and calls["n"] == n_first
    assert torch.equal(a, b)
    assert torch.allclose(a.norm(dim=-1), torch.ones(len(a)), atol=1e-5)


def test_subset_reads_root_features_without_encoding(fresh_cache):
    bundle = clipnb.create_model("clipnb-ViT-tiny")
    data = clipnb.load_dataset("digits")
    full = encode_images(bundle, data.train)
    encode, calls = _counting(bundle)
    sub = clipnb.few_shot(data.train, 3, seed=0)
    part = encode_images(bundle, sub, encode=encode)
    assert calls["n"] == 0
    assert torch.equal(part, full[torch.as_tensor(sub.indices)])


def test_changed_checkpoint_never_reuses_features(fresh_cache, tmp_path):
    torch.manual_seed(0)
    bundle = clipnb.create_model("clipnb-ViT-tiny")
    path = tmp_path / "m.pt"
    torch.save({"state_dict": bundle.model.state_dict()}, path)
    data = clipnb.load_dataset("digits")
    first = encode_images(clipnb.create_model("clipnb-ViT-tiny", pretrained=path), data.val)
    state = bundle.model.state_dict()
    state["visual.proj"] = state["visual.proj"] * -1.0
    torch.save({"state_dict": state}, path)
    second = encode_images(clipnb.create_model("clipnb-ViT-tiny", pretrained=path), data.val)
    assert torch.allclose(second, -first, atol=1e-5)


def test_ensemble_embedding_is_normalised_mean(fresh_cache):
    bundle = clipnb.create_model("clipnb-ViT-tiny")
    names = ["circle", "square"]
    templates = ("a photo of a {}.", "a drawing of a {}.", "a {} on the left")
    got = class_embeddings(bundle, names, templates)
    for i, name in enumerate(names):
        per = features.encode_texts(bundle, [t.format(name) for t in templates], cache=False)
        assert torch.allclose(got[i], F.normalize(per.mean(0), dim=0), atol=1e-6)
    assert len(features.ENSEMBLE_TEMPLATES) == 80


def test_text_features_cut_to_the_longest_prompt_equal_encode_text() -> None:
    from clipnb.core.features import ENSEMBLE_TEMPLATES, prompts, text_features
    from clipnb.core.models import create_model

    bundle = create_model("clipnb-ViT-tiny", None)
    tokens = bundle.tokenize(prompts(["cat", "aquarium fish"], ENSEMBLE_TEMPLATES[:12]))
    assert int(tokens.argmax(dim=-1).max()) + 1 < tokens.shape[1]  # the cut happens
    with torch.no_grad():
        torch.testing.assert_close(
            text_features(bundle.model, tokens), bundle.model.encode_text(tokens)
        )
