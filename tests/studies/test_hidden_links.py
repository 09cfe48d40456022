"""Tests for the synthetic memes (clipnb.data.memes), the meme finetuning and the chapter's
numbers and verdicts (clipnb.studies.hidden_links)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from open_clip.tokenizer import _tokenizer
from PIL import Image

import clipnb
from clipnb.data import memes, world
from clipnb.methods.saliency import CamSetting
from clipnb.studies import hidden_links
from clipnb.studies.hidden_links import (
    BOTH_VIEW,
    EMBLEM_VIEW,
    FT_IMAGE,
    FT_TEXT,
    IMAGE_VIEW,
    TEXT_VIEW,
    ZERO_SHOT,
    Results,
    numbers,
    verdicts,
)

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


# --- the chapter's numbers and verdicts, on hand-made results ------------------------------------

EXP1_STAGES = (
    ZERO_SHOT,
    FT_IMAGE,
    FT_TEXT,
    "zero-shot · shared prompts",
    "image encoder · shared prompts",
    "text encoder · shared prompts",
)
AUX_EXPERIMENTS = (("2", "memes + alignment"), ("3", "memes + self-learning + alignment"))
#: 100 test memes per group, half of them hateful: a chance band of 10 points for the accuracy
#: and 200 * sqrt(101 / 30000) = 11.6 points for the AUROC.
LABELS = np.r_[np.ones(50, int), np.zeros(50, int)]
BAND = 200 * np.sqrt(101 / 30000)


def hand_made(seeds=(0,), synthetic=True, have_aux=True, masks=True, aux_counts=(0, 2)) -> Results:
    """Every test group at chance (50 %), every CAM mass equal to its region's area (25, 31.25 %),
    the self-learning step's shares close (100 % against 95 %)."""
    groups = ("shown", "hidden") if synthetic else ("all",)
    metric_groups = ("all", *groups) if synthetic else groups  # as grouped_metrics
    settings = [("1", stage, 0) for stage in EXP1_STAGES]
    if have_aux:
        settings += [(e, stage, n) for e, stage in AUX_EXPERIMENTS for n in aux_counts]
    keys = [
        {"experiment": e, "stage": stage, "n": n, "seed": seed, "group": g}
        for e, stage, n in settings
        for seed in seeds
        for g in metric_groups
    ]
    records = pd.DataFrame([k | dict.fromkeys(hidden_links.METRICS, 50.0) for k in keys])
    cam = {"emblem mass": 25.0, "text mass": 31.25, "emblem area": 0.25, "text area": 0.3125}
    masses = pd.DataFrame([k | cam for k in keys if k["group"] in groups])  # as cam_rows
    if not masks:
        masses = pd.DataFrame(columns=hidden_links.MASS_COLUMNS)
    shares = [
        {"seed": s, "linked (trained)": 100.0, "not linked (never seen)": 95.0} for s in seeds
    ]
    views = (
        (EMBLEM_VIEW, TEXT_VIEW, IMAGE_VIEW, BOTH_VIEW)
        if synthetic
        else (TEXT_VIEW, IMAGE_VIEW, BOTH_VIEW)
    )
    return Results(
        seeds=list(seeds),
        aux_counts=list(aux_counts),
        cam_counts=[0, 2],
        synthetic=synthetic,
        have_aux=have_aux,
        test_labels={g: LABELS for g in groups},
        probes={v: dict.fromkeys(groups, 50.0) for v in views},
        chosen_lr={"image_encoder": 1e-3, "text_encoder": 1e-4},
        chosen_steps=[0, 3, 6, 3],
        records=records,
        masses=masses,
        shares=pd.DataFrame.from_records(
            shares if synthetic and have_aux else [], columns=hidden_links.SHARE_COLUMNS
        ),
        n_runs=9,
        n_train=64,
        cam_memes_used=4,
        cam_grid=4,
        cam_setting="HiResCAM at block 1",
        cam_reading="The maps use HiResCAM at block 1.",
    )


def put(frame: pd.DataFrame, column: str, value: float, **where) -> None:
    """Set ``column`` to ``value`` in the rows where every ``column == value`` of ``where``."""
    keep = np.ones(len(frame), bool)
    for key, wanted in where.items():
        keep &= (frame[key] == wanted).to_numpy()
    assert keep.any(), where
    frame.loc[keep, column] = value


def test_numbers_of_hand_made_results():
    r = hand_made()
    put(r.records, "AUROC", 70.0, stage=FT_TEXT, group="hidden")
    put(r.records, "accuracy", 62.5, stage=FT_IMAGE, group="hidden")
    n = numbers(r)
    assert n["band_main"] == pytest.approx(BAND) and n["band_shown"] == pytest.approx(BAND)
    assert n["band_main_top"] == pytest.approx(50 + BAND) and n["acc_band_first"] == 10.0
    assert n["auroc_ft"] == 70.0 and n["acc_ft_best"] == 62.5 and n["auroc_ft_shown"] == 50.0
    assert n["chosen_step_mean"] == 3.0 and n["n_max"] == 2 and n["n_runs"] == 9
    assert n["auroc_self"] == 50.0 and n["linked_chain"] == 50.0
    assert n["share_linked"] == 100.0 and n["share_unlinked"] == 95.0
    assert n["area_emblem"] == 25.0 and n["area_text"] == 31.25 and n["cam_txt_text"] == 31.25
    assert np.isnan(n["cam_spread"]) and np.isnan(n["trade_corr"])  # one seed
    assert n["probe_image_hidden"] == 50.0 and n["cam_memes_used"] == 4
    assert "minutes" not in n  # timing comes from hidden_links.minutes


def test_verdicts_of_results_at_chance():
    assert verdicts(hand_made()) == {
        "cam_setting": "HiResCAM at block 1",
        "cam_reading": "The maps use HiResCAM at block 1.",
        "probe_alone_verdict": "both stay at chance: the confounders do their job, neither the"
        " picture nor the words alone carry the label",
        "probe_image_verdict": "at chance: a linear probe on the image features does not pick up"
        " which emblem-and-printed-word combinations are hateful",
        "probe_image_hidden_vs": "at chance",
        "exp1_hidden_verdict": "no setting ranks the memes above chance",
        "exp1_source_verdict": "That matches the source's finding",
        "ft_image_vs": "at chance",
        "shown_text_vs": "at chance",
        "shown_image_vs": "at chance",
        "shown_image_shared_vs": "at chance",
        "shown_text_shared_vs": "at chance",
        "shown_conclusion": "Finetuning does not clearly learn even the links it is shown at this"
        " scale, so the hidden-link numbers say little about missing links.",
        "aux_counts_words": "0, 2",
        "stages_hidden_verdict": "None of the stages moves the hidden-link AUROC off chance",
        "trade_verdict": "cannot be compared from seed to seed (one seed)",
        "aux_shown_verdict": "none of the three raises it; nothing here creates the links the"
        " memes do not teach",
        "share_verdict": "The two shares are close: the step taught the sentence's form"
        ' ("the {concept} keep the {word}" is hateful), not which concept goes with which word.',
        "summary_share": 'learns that a chain-shaped sentence is "hateful" whether or not its link'
        " exists",
        "cam_zs_verdict": "the emblem gets less than its share, the caption gets less than its"
        " share, and 44 % lies elsewhere (on the background)",
        "cam_img_move": "less on the caption, less on the emblem than zero-shot",
        "cam_txt_move": "less on the caption, less on the emblem than zero-shot",
        "cam_spread_verdict": "the spread over seeds cannot be measured here",
        "cam_source_verdict": "the maps do not show the steady movement the source described",
        "cam_auc_verdict": "the hidden-link AUROC stays at chance for every number of auxiliary"
        " images in both experiments, whatever the maps do",
        "summary_exp1": "finetuning either encoder of the embedded CLIP does not rise above chance"
        " on those links, as the source found on Hateful Memes, and it does not clearly learn even"
        " the links its training memes contain",
        "summary_aux": "leave the hidden-link AUROC at chance here",
        "summary_cam": "their spread over seeds cannot be measured here",
    }


def test_probe_verdicts():
    r = hand_made()
    r.probes[EMBLEM_VIEW]["shown"] = 70.0
    r.probes[IMAGE_VIEW]["shown"] = 38.0  # more than the 10-point band below chance
    v = verdicts(r)
    assert v["probe_alone_verdict"] == (
        "the emblem alone is off chance, so the confounders do not fully hide the label"
    )
    assert v["probe_image_verdict"] == (
        "below chance: a linear probe on the image features does not pick up which"
        " emblem-and-printed-word combinations are hateful"
    )
    r.probes[TEXT_VIEW]["shown"] = 39.0
    r.probes[IMAGE_VIEW]["shown"] = 61.0
    r.probes[IMAGE_VIEW]["hidden"] = 61.0
    v = verdicts(r)
    assert v["probe_alone_verdict"] == (
        "the emblem alone and the caption text alone are off chance, so the confounders do not"
        " fully hide the label"
    )
    assert v["probe_image_verdict"].startswith(
        "above chance: the embedded CLIP's image features separate the few"
    )
    assert v["probe_image_hidden_vs"] == "above chance"
    r.probes[TEXT_VIEW]["shown"] = 59.0  # within the band
    assert verdicts(r)["probe_alone_verdict"].startswith("the emblem alone is off chance")


def test_experiment1_verdicts():
    r = hand_made()
    put(r.records, "AUROC", 70.0, stage=ZERO_SHOT, group="hidden")
    v = verdicts(r)
    assert v["exp1_hidden_verdict"] == "zero-shot · caption prompts ranks the memes above chance"
    assert v["exp1_source_verdict"] == "That matches the source's finding"  # zero-shot only
    put(r.records, "AUROC", 70.0, stage=FT_TEXT, group="hidden")
    put(r.records, "AUROC", 30.0, stage=FT_IMAGE, group="hidden")
    v = verdicts(r)
    assert v["exp1_hidden_verdict"] == (
        "zero-shot · caption prompts and text encoder · caption prompts rank the memes above chance"
    )
    assert v["exp1_source_verdict"] == "That departs from the source's finding"
    assert v["ft_image_vs"] == "below chance"
    assert v["summary_exp1"] == (
        "finetuning rises above chance on those links (text encoder · caption prompts), unlike"
        " the source's finding on Hateful Memes, and it does not clearly learn even the links its"
        " training memes contain"
    )


def test_an_accuracy_above_chance_departs_from_the_source():
    r = hand_made()
    put(r.records, "accuracy", 61.0, stage="zero-shot · shared prompts", group="hidden")
    assert verdicts(r)["exp1_source_verdict"] == "That departs from the source's finding"


def test_shown_link_verdicts_and_conclusions():
    r = hand_made()
    for stage in (FT_TEXT, FT_IMAGE):
        put(r.records, "AUROC", 80.0, stage=stage, group="shown")
    put(r.records, "AUROC", 30.0, stage="image encoder · shared prompts", group="shown")
    v = verdicts(r)
    assert [v[f"shown_{k}_vs"] for k in ("text", "image", "image_shared", "text_shared")] == [
        "above chance",
        "above chance",
        "below chance",
        "at chance",
    ]
    assert v["shown_conclusion"] == (
        "Finetuning learns the links it is shown; the hidden links are not in the labelled data,"
        " and finetuning on it does not find them."
    )
    assert v["summary_exp1"].endswith(
        "as the source found on Hateful Memes, while it does learn the links its training memes"
        " contain"
    )
    put(r.records, "AUROC", 80.0, stage=FT_IMAGE, group="hidden")
    v = verdicts(r)
    assert v["shown_conclusion"] == (
        "Finetuning learns the links it is shown, and some of it carries over to hidden links."
    )
    assert v["summary_exp1"] == (
        "finetuning rises above chance on those links (image encoder · caption prompts), unlike"
        " the source's finding on Hateful Memes, while it does learn the links its training memes"
        " contain"
    )


def test_auxiliary_stage_verdicts():
    r = hand_made()
    put(r.records, "AUROC", 70.0, experiment="2", n=2, group="hidden")
    v = verdicts(r)
    assert v["stages_hidden_verdict"] == (
        "The alignment images moves the hidden-link AUROC off chance"
    )
    assert v["cam_auc_verdict"] == (
        "the hidden-link AUROC leaves chance in 1 of the 4 settings (figure of AUROC against the"
        " number of auxiliary images, above)"
    )
    assert v["aux_shown_verdict"] == (
        "none of the three raises it; and the alignment images also moves the hidden links off"
        " chance"
    )
    assert v["summary_aux"] == ("move the hidden-link AUROC off chance here (the alignment images)")
    put(r.records, "AUROC", 30.0, experiment="3", n=2, group="hidden")
    put(r.records, "AUROC", 60.0, experiment="3", group="shown")
    v = verdicts(r)
    assert v["stages_hidden_verdict"] == (
        "The alignment images and the whole pipeline move the hidden-link AUROC off chance"
    )
    assert v["aux_shown_verdict"] == (
        "only the self-learning step and the whole pipeline raise it; and the alignment images"
        " and the whole pipeline also move the hidden links off chance"
    )
    assert v["summary_aux"] == (
        "move the hidden-link AUROC off chance here (the alignment images and the whole"
        " pipeline); the self-learning step and the whole pipeline raise the shown-link AUROC too"
    )


def test_the_auxiliary_stages_raising_the_shown_links():
    r = hand_made()
    put(r.records, "AUROC", 60.0, experiment="2", n=2, group="shown")
    v = verdicts(r)
    assert v["aux_shown_verdict"] == (
        "only the alignment images raises it; nothing here creates the links the memes do not teach"
    )
    assert v["summary_aux"] == (
        "leave the hidden-link AUROC at chance here; the alignment images raises the shown-link"
        " AUROC instead"
    )
    put(r.records, "AUROC", 60.0, experiment="3", group="shown")
    assert verdicts(r)["aux_shown_verdict"] == (
        "each of the three raises it: extra training of the text side, on texts that name the"
        " concepts and the training words, helps the links the memes already teach; nothing here"
        " creates the links the memes do not teach"
    )


def test_trade_off_across_seeds():
    r = hand_made(seeds=(0, 1))
    for seed, linked in ((0, 40.0), (1, 60.0)):
        put(r.records, "linked", linked, seed=seed)
        put(r.records, "confounders", 100 - linked, seed=seed)
    assert numbers(r)["trade_corr"] == pytest.approx(-1.0)
    assert numbers(r)["trade_std_max"] == pytest.approx(np.std([40, 60], ddof=1))
    assert verdicts(r)["trade_verdict"] == "swing in opposite directions from seed to seed"
    put(r.records, "confounders", 40.0, seed=0)
    put(r.records, "confounders", 60.0, seed=1)
    assert verdicts(r)["trade_verdict"] == (
        "do not simply trade off against each other from seed to seed"
    )


def test_share_verdicts():
    r = hand_made()
    r.shares["not linked (never seen)"] = 80.0
    v = verdicts(r)
    assert v["share_verdict"] == (
        'Linked sentences land nearest "hateful" +20.0 points more often than unlinked ones: the'
        " step taught some of the links themselves, not only the sentence's form."
    )
    assert v["summary_share"] == "learns more than the sentence's form"
    r.shares["not linked (never seen)"] = 112.5  # a negative gap counts by its size
    assert verdicts(r)["share_verdict"].startswith('Linked sentences land nearest "hateful" -12.5')


def test_cam_verdicts_of_the_encoders():
    r = hand_made()
    put(r.masses, "emblem mass", 40.0, stage=ZERO_SHOT)
    put(r.masses, "text mass", 50.0, stage=FT_IMAGE)
    v = verdicts(r)
    assert v["cam_zs_verdict"] == (
        "the emblem gets more than its share, the caption gets less than its share, and 29 % lies"
        " elsewhere (on the background)"
    )
    assert v["cam_img_move"] == "more on the caption, less on the emblem than zero-shot"
    assert v["cam_txt_move"] == "less on the caption, less on the emblem than zero-shot"


def moving_masses(r: Results, moves: dict[tuple[str, str], float]) -> Results:
    """Seeds 0 and 1 one point below and above each mean (a spread of sqrt(2) points), and the
    masses at n = 2 moved by ``moves[(experiment, region)]`` points from n = 0."""
    for seed, offset in ((0, -1.0), (1, 1.0)):
        for (experiment, region), move in moves.items():
            base = 25.0 if region == "emblem" else 31.25
            where = dict(experiment=experiment, group="hidden", seed=seed)
            put(r.masses, f"{region} mass", base + offset, n=0, **where)
            put(r.masses, f"{region} mass", base + offset + move, n=2, **where)
    return r


def test_cam_spread_and_source_verdicts():
    every = [("2", "emblem"), ("2", "text"), ("3", "emblem"), ("3", "text")]
    r = moving_masses(hand_made(seeds=(0, 1)), dict.fromkeys(every, 0.0))
    assert numbers(r)["cam_spread"] == pytest.approx(np.sqrt(2))
    v = verdicts(r)
    assert v["cam_spread_verdict"] == "at least as large as every one of these changes"
    assert v["summary_cam"] == "their spread over seeds is as large as the moves"
    assert (
        v["cam_source_verdict"] == "the maps do not show the steady movement the source described"
    )

    r = moving_masses(hand_made(seeds=(0, 1)), dict.fromkeys(every, 0.0) | {("2", "emblem"): 5.0})
    v = verdicts(r)
    assert v["cam_spread_verdict"] == "larger than 3 of these 4 changes"
    assert v["summary_cam"] == "1 of the 4 moves measured exceeds their spread over seeds"
    assert v["cam_source_verdict"] == (
        "of the steady movements the source described, the maps show only the one onto the"
        " emblem with the alignment"
    )

    r = moving_masses(
        hand_made(seeds=(0, 1)),
        dict.fromkeys(every, -5.0) | {("2", "emblem"): 5.0, ("3", "text"): 5.0},
    )
    v = verdicts(r)
    assert v["cam_spread_verdict"] == "smaller than every one of these changes"
    assert v["summary_cam"] == "4 of the 4 moves measured exceed their spread over seeds"
    assert v["cam_source_verdict"] == "the maps show the steady movement the source described"


def test_verdicts_without_groups_auxiliary_data_or_masks():
    """The full profile without aux_dir: all test memes in one group, experiment 1 only."""
    r = hand_made(synthetic=False, have_aux=False, masks=False)
    n = numbers(r)
    assert np.isnan(n["probe_emblem"]) and np.isnan(n["band_shown"]) and np.isnan(n["auroc_align"])
    v = verdicts(r)
    assert v["probe_alone_verdict"].startswith("both stay at chance")  # the emblem: not measured
    assert v["probe_image_hidden_vs"] == "not measured"
    assert v["shown_text_vs"] == "not measured"
    assert v["stages_hidden_verdict"] == "Without auxiliary data only the memes-only stage ran"
    assert v["trade_verdict"] == "cannot be compared here (no auxiliary stages ran)"
    assert v["aux_shown_verdict"] == (
        "this profile has no shown-link split; nothing here creates the links the memes do not"
        " teach"
    )
    assert v["share_verdict"] == "This is measured on the generated memes only."
    assert v["summary_share"] == "could not be probed without the generated memes"
    assert v["cam_zs_verdict"] == "the masks needed to measure this are missing"
    assert v["cam_img_move"] == "not measured"
    assert v["summary_aux"] == "could not be tried here (no auxiliary data)"
    assert v["summary_cam"] == "their spread over seeds cannot be measured here"
    assert v["cam_auc_verdict"].startswith("the hidden-link AUROC stays at chance")


def test_moves_without_a_spread_cannot_be_compared():
    # Unreachable from a run (the spread and the moves come from the same rows), kept honest here.
    assert hidden_links._summary_cam(1.0, {}) == "their masses could not be measured here"
    assert hidden_links._cam_spread_verdict(1.0, {}) == (
        "the spread over seeds cannot be measured here"
    )


def test_versus_chance_and_agreement():
    assert hidden_links.versus_chance(61.0, 10.0) == "above chance"
    assert hidden_links.versus_chance(39.0, 10.0) == "below chance"
    assert hidden_links.versus_chance(60.0, 10.0) == "at chance"
    assert hidden_links.versus_chance(np.float32("nan"), 10.0) == "not measured"
    assert hidden_links.agree(["a"], "moves", "move") == "moves"
    assert hidden_links.agree(2, "moves", "move") == "move"


def test_tables_and_figures_of_hand_made_results():
    r = hand_made(seeds=(0, 1))
    assert list(hidden_links.probe_table(r).columns) == ["shown", "hidden"]
    plain = hidden_links.plain_table(r)
    assert list(plain.index) == list(EXP1_STAGES)
    assert list(plain.columns)[:2] == ["hidden · accuracy", "hidden · AUROC"]
    assert plain.loc[FT_TEXT, "hidden · AUROC"] == "50.0 ± 0.0"
    stages = hidden_links.stages_table(r)
    assert list(stages.index) == [
        "0. zero-shot",
        "1. memes only (text encoder)",
        "2. + alignment (2 images per emblem)",
        "3a. + self-learning (no alignment)",
        "3b. + self-learning + alignment (2 per emblem)",
    ]
    assert list(hidden_links.cam_table(r).index) == [ZERO_SHOT, FT_IMAGE, FT_TEXT]
    assert hidden_links.share_table(r).loc["mean", "linked (trained)"] == 100.0
    fig = hidden_links.aux_curve_figure(r)
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "Hidden-link memes: AUROC"
    assert len(hidden_links.cam_over_n_figure(r).axes) == 1


def test_shown_links_are_learned_only_when_both_encoders_learn_them():
    r = hand_made()
    put(r.records, "AUROC", 80.0, stage=FT_TEXT, group="shown")
    v = verdicts(r)
    assert v["shown_text_vs"] == "above chance" and v["shown_image_vs"] == "at chance"
    assert v["shown_conclusion"].startswith("Finetuning does not clearly learn even the links")


def test_a_setting_below_chance_also_leaves_chance():
    r = hand_made()
    put(r.records, "AUROC", 30.0, experiment="3", n=0, group="hidden")
    assert verdicts(r)["cam_auc_verdict"].startswith(
        "the hidden-link AUROC leaves chance in 1 of the 4 settings"
    )


def test_a_move_counts_as_the_source_s_only_when_it_is_steady():
    r = hand_made(seeds=(0, 1), aux_counts=(0, 1, 2))
    for seed, offset in ((0, -1.0), (1, 1.0)):
        for n, emblem in ((0, 25.0), (1, 15.0), (2, 35.0)):  # up 10 points, but not steadily
            where = dict(experiment="2", group="hidden", seed=seed, n=n)
            put(r.masses, "emblem mass", emblem + offset, **where)
    v = verdicts(r)
    assert v["cam_spread_verdict"] == "larger than 3 of these 4 changes"
    assert v["cam_source_verdict"] == (
        "the maps do not show the steady movement the source described"
    )
    put(r.masses, "emblem mass", 30.0, experiment="2", n=1)  # now steadily up
    assert verdicts(r)["cam_source_verdict"].endswith(
        "only the one onto the emblem with the alignment"
    )
