"""Tests for the synthetic memes (clipnb.memes) and the meme finetuning (clipnb.chain)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from open_clip.tokenizer import _tokenizer
from PIL import Image

import clipnb
from clipnb.data import memes, world
from clipnb.methods.saliency import CamSetting
from clipnb.studies import hidden_links

LINKS = memes.DEFAULT_LINKS


@pytest.fixture(scope="module")
def data():
    return clipnb.load_dataset("memes", n_train=96, n_val=48, n_test=48)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return clipnb.create_model("clipnb-ViT-tiny")


def test_memes_are_registered_and_shaped(data):
    assert "memes" in clipnb.list_datasets("embedded")
    assert data.class_names == ["not hateful", "hateful"]
    for split in (data.train, data.val, data.test):
        assert split.images.shape[1:] == (32, 32, 3) and split.images.dtype == np.uint8
        assert split.texts is not None and len(split.texts) == len(split)
        assert set(np.unique(split.masks)) <= {0, memes.MASK_EMBLEM, memes.MASK_TEXT}
        # every meme has an emblem and a caption region, the caption in the bottom band
        assert ((split.masks == memes.MASK_EMBLEM).sum(axis=(1, 2)) > 10).all()
        text_rows = (split.masks == memes.MASK_TEXT).any(axis=2)
        assert text_rows.any(axis=1).all()
        assert not text_rows[:, :18].any()


def test_labels_are_the_hidden_links(data):
    for split in (data.train, data.val, data.test):
        table = memes.meme_table(split)
        expected = [int(LINKS.linked(e, w)) for e, w in zip(table.emblem, table.word, strict=True)]
        assert table.label.tolist() == expected
        assert abs(table.label.mean() - 0.5) < 0.02


def test_confounders_are_balanced(data):
    """Each linked emblem and each linked word occurs in both classes, in every split and group."""
    for split in (data.train, data.val, data.test):
        table = memes.meme_table(split)
        for group, part in table.groupby("group"):
            classes_per_emblem = part.groupby("emblem").label.nunique()
            classes_per_word = part.groupby("word").label.nunique()
            assert set(classes_per_emblem.index) == set(LINKS.all_emblems), group
            assert (classes_per_emblem == 2).all(), group
            assert (classes_per_word == 2).all(), group
            # and about as often in each class
            share = part.groupby("emblem").label.mean()
            assert share.between(0.3, 0.7).all(), (group, share)


def test_hidden_words_never_appear_in_training_memes(data):
    train_words = set(data.train.texts)
    assert train_words == set(LINKS.words_for("train"))
    test = memes.meme_table(data.test)
    hidden = set(test.loc[test.group == "hidden", "word"])
    assert hidden == set(LINKS.words_for("test")) and not hidden & train_words
    val = memes.meme_table(data.val)
    assert set(val.loc[val.group == "hidden", "word"]) == set(LINKS.words_for("val"))


def test_concepts_words_and_chains_are_absent_from_pretraining():
    vocab = memes.world_caption_vocabulary(3000)
    assert {"circle", "star", "photo", "red"} <= vocab  # the sample covers the caption words
    invented = [*LINKS.concepts, *LINKS.all_words]
    assert not set(invented) & vocab
    # not even one BPE token of an invented word is a token of a pretraining caption word
    world_tokens = {t for w in vocab for t in _tokenizer.encode(w)}
    for word in invented:
        assert not set(_tokenizer.encode(word)) & world_tokens, word
    # no chain sentence is (or is contained in) a pretraining caption
    captions = set()
    for i in range(3000):
        rng = np.random.default_rng([1, i])
        captions.add(world.caption(world.sample_scene(rng, styles=world.STYLES), rng))
    for sentence in LINKS.chain_sentences():
        assert sentence not in captions
        assert not any(sentence in c for c in captions)


def test_generation_is_deterministic_and_alignment_sets_are_nested():
    a = memes.generate_split(LINKS, [("shown", "train", 16)], seed=5, name="a")
    b = memes.generate_split(LINKS, [("shown", "train", 16)], seed=5, name="a")
    assert np.array_equal(a.images, b.images) and a.texts == b.texts
    aux4 = memes.alignment_images(LINKS, 4)
    aux2 = memes.alignment_images(LINKS, 2)
    assert len(aux4) == 4 * len(LINKS.all_emblems)
    assert np.array_equal(memes.first_per_emblem(aux4, 2).images, aux2.images)
    assert aux2.texts[0] == LINKS.concepts[LINKS.concept_of_emblem(aux2.meta["emblems"][0])]


def test_pair_batches_hold_one_negative_and_one_positive():
    labels = np.array([0, 1, 1, 0, 0, 1, 1, 0, 1])
    batches = hidden_links.pair_batches(labels, 7, seed=3)
    assert batches.shape == (7, 2)
    assert (labels[batches[:, 0]] == 0).all() and (labels[batches[:, 1]] == 1).all()
    assert np.array_equal(batches, hidden_links.pair_batches(labels, 7, seed=3))
    # one full pass over each class before any repeat
    assert len(set(batches[:4, 0])) == 4


def test_candidate_texts_put_the_caption_inside():
    cands = hidden_links.candidate_texts(["zib", "fip"], 2, hidden_links.CAPTION_TEMPLATES)
    assert cands[0] == (
        "this photo says zib, it is not hateful",
        "this photo says zib, it is hateful",
    )
    shared = hidden_links.candidate_texts(None, 2, hidden_links.SHARED_TEMPLATES)
    assert shared[0] == shared[1] == hidden_links.SHARED_TEMPLATES


def test_meme_metrics():
    m = hidden_links.meme_metrics(np.array([2.0, -1.0, 0.5, -3.0]), np.array([1, 1, 0, 0]))
    assert m["accuracy"] == 50.0 and m["linked"] == 50.0 and m["confounders"] == 50.0
    assert m["AUROC"] == 75.0


def test_frozen_reference_never_changes(tiny, data):
    reference = hidden_links.FrozenReference(tiny)
    before = {k: v.clone() for k, v in reference.model.state_dict().items()}
    anchors = reference.anchors.clone()
    pretrained = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    result = hidden_links.finetune_memes(
        tiny,
        "text_encoder",
        data.train,
        data.val,
        steps=4,
        lr=1e-2,
        eval_every=2,
        aux=memes.alignment_images(LINKS, 1),
        chain=LINKS.chain_sentences(),
        reference=reference,
    )
    assert all(not p.requires_grad for p in reference.model.parameters())
    for k, v in reference.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(reference.anchors, anchors)
    for k, v in tiny.model.state_dict().items():
        assert torch.equal(v, pretrained[k]), k
    # the trained copy did move (at the last step; the chosen one may be earlier)
    assert len(result.train_loss) == 4 and [s for s, _ in result.val_curve] == [0, 2, 4]


def test_only_the_text_side_moves_and_the_chosen_step_is_restored(tiny, data):
    result = hidden_links.finetune_memes(
        tiny, "text_encoder", data.train, data.val, steps=3, lr=1e-2, eval_every=1, seed=1
    )
    model = result.classifier.bundle.model
    pairs = zip(model.visual.named_parameters(), tiny.model.visual.parameters(), strict=True)
    for (name, p), q in pairs:
        assert torch.equal(p, q), name
    scores = dict(result.val_curve)
    assert scores[result.chosen_step] == max(scores.values())
    again = hidden_links.meme_metrics(result.classifier.scores(data.val), data.val.labels)["AUROC"]
    assert again == pytest.approx(scores[result.chosen_step])


def test_token_rows_train_exactly_like_the_full_table(tiny, data):
    kwargs = dict(steps=4, lr=1e-2, eval_every=0, seed=2)
    fast = hidden_links.finetune_memes(tiny, "text_encoder", data.train, data.val, **kwargs)
    full = hidden_links.finetune_memes(
        tiny, "text_encoder", data.train, data.val, token_rows=False, **kwargs
    )
    np.testing.assert_allclose(fast.train_loss, full.train_loss, rtol=1e-4)


def test_image_encoder_training_with_shared_prompts(tiny, data):
    result = hidden_links.finetune_memes(
        tiny,
        "image_encoder",
        data.train,
        data.val,
        templates=hidden_links.SHARED_TEMPLATES,
        steps=2,
        lr=1e-3,
        eval_every=0,
    )
    assert result.classifier.image_tower_changed
    records = hidden_links.grouped_metrics(result.classifier, data.test)
    assert [r["group"] for r in records] == ["all", "shown", "hidden"]
    rows = np.flatnonzero(data.test.labels == 1)[:3]
    cams = result.classifier.cams(data.test, rows, CamSetting("HiResCAM", "block 1"))
    masses = hidden_links.cam_masses(cams, data.test.masks[rows])
    assert cams.shape == (3, 32, 32)
    assert ((masses["emblem mass"] + masses["text mass"]) <= 1 + 1e-9).all()


def test_full_profile_auxiliary_files(tmp_path):
    folder = tmp_path / "aux"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(folder / f"im{i}.png")
    (folder / "captions.csv").write_text("image,text\nim0.png,subject a\nim1.png,subject b\n")
    aux = memes.load_alignment_folder(folder)
    assert aux.texts == ["subject a", "subject b"] and aux.labels.tolist() == [1, 1]
    assert aux.image(1).size == (8, 8)
    yml = tmp_path / "hidden_links.yaml"
    yml.write_text("target: hateful\ncontrast: [positive, happy]\nsentences:\n  - a b c\n")
    spec = memes.load_chain_yaml(yml)
    assert spec.sentences == ["a b c"] and spec.anchors == ("hateful", "positive", "happy")
    with pytest.raises(clipnb.DatasetNotFoundError, match=r"captions\.csv"):
        memes.load_alignment_folder(tmp_path)
    with pytest.raises(clipnb.DatasetNotFoundError, match="sentences"):
        memes.load_chain_yaml(tmp_path / "missing.yaml")


def test_unlinked_chain_sentences_pair_words_with_other_concepts():
    words = LINKS.words_for("test")
    linked = LINKS.chain_sentences(words)
    for shift in (1, 2, 3):
        for word, sentence in zip(words, LINKS.chain_sentences(words, shift=shift), strict=True):
            concept = next(c for c in LINKS.concepts if f" {c} " in f" {sentence} ")
            assert LINKS.concepts.index(concept) != LINKS.concept_of_word(word)
            assert sentence not in linked


def test_chain_batches_keep_every_anchor(tiny):
    texts = hidden_links._Texts.build(
        tiny, [("a", "b")], [], ["s1", "s2", "s3", "s4"], hidden_links.ANCHORS
    )
    gen = torch.Generator().manual_seed(0)
    rows = texts.chain_rows(2, gen)
    assert len(rows) == 2 + len(hidden_links.ANCHORS)
    assert set(rows[-3:].tolist()) == {4, 5, 6}  # the anchors come after the 4 sentences
    assert texts.chain_target[rows[-3:]].tolist() == [0, 1, 2]
    assert len(texts.chain_rows(0, gen)) == 7


def test_target_share(tiny):
    reference = hidden_links.FrozenReference(tiny)
    # the frozen model puts its own anchor word "hateful" nearest its own "hateful" anchor
    assert hidden_links.target_share(tiny, reference, ["hateful"]) == 100.0
    assert hidden_links.target_share(tiny, reference, ["positive", "happy"]) == 0.0
