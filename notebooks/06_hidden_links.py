# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python (clipnb)
#     language: python
#     name: clipnb
# ---

# %% [markdown]
# # Hidden links: Hateful-Memes-style finetuning
#
# The source report (its section 2.3) finetuned CLIP on Hateful Memes, where a meme is hateful
# only through what its picture and its caption mean *together*, and often through a link that
# neither states. Finetuning stayed at chance; the authors then tried to fill the missing link
# with auxiliary image–text pairs (2.3.1) and with a text-encoder "self-learning" step against a
# frozen copy of CLIP (2.3.2), and looked at where Grad-CAM puts the attention.
#
# **Question.** When the label depends on a link that no training example states, does
# finetuning CLIP on labelled examples learn anything, and do auxiliary image–text and text–text
# training that state the link move the accuracy and the attention?

# %% tags=["parameters"]
profile = "embedded"
dataset = "memes"
seeds = [0, 1, 2]
n_train = 512
n_val = 128
n_test = 256
steps = 150
eval_every = 50
pairs_per_step = 1
lrs = [0.0001, 0.001]
chain_batch = 4
aux_counts = [0, 2, 4, 6, 8, 10]
cam_counts = [0, 2, 4, 6, 8]
cam_memes = 32
aux_dir = ""
chain_yaml = ""
max_per_split = 0

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

import clipnb
from clipnb.core import report
from clipnb.core.evaluation import fit_linear_probe, select_on_validation
from clipnb.core.features import encode_images, encode_texts, image_tensors
from clipnb.data import memes
from clipnb.methods import saliency
from clipnb.methods.backbones import load_model
from clipnb.studies import hidden_links

start, start_cpu = time.perf_counter(), time.process_time()
report.set_style()
clipnb.seed_everything(seeds[0])
bundle = load_model(profile)
cam_validation = saliency.validated_setting(bundle, profile)
report.glue_words("cam_setting", cam_validation.setting.label())
report.glue_words("cam_reading", saliency.reading(cam_validation))
if dataset == "memes":
    data = clipnb.load_dataset(dataset, n_train=n_train, n_val=n_val, n_test=n_test)
else:
    data = clipnb.load_dataset(dataset, max_per_split=max_per_split or None)
train, val, test = data.train, data.val, data.test
synthetic = dataset == "memes"
links = memes.DEFAULT_LINKS if synthetic else None
# The auxiliary knowledge: generated with the memes, or the user's files in the full profile.
if synthetic:
    aux_all = memes.alignment_images(links, max(aux_counts))
    chain_spec = memes.ChainSpec(links.chain_sentences())
    aux_note = "generated with the memes"
elif aux_dir and chain_yaml and Path(aux_dir).is_dir() and Path(chain_yaml).is_file():
    aux_all = memes.load_alignment_folder(aux_dir)
    chain_spec = memes.load_chain_yaml(chain_yaml)
    aux_note = f"read from {aux_dir} and {chain_yaml}"
else:
    aux_all, chain_spec = None, None
    aux_note = "missing (set aux_dir and chain_yaml): only experiment 1 runs"
print(
    f"{dataset}: {len(train)} train, {len(val)} val, {len(test)} test memes; auxiliary data {aux_note}"
)

# %% [markdown]
# ## The memes
#
# The Hateful Memes images and their offensive links are not something this report reproduces.
# The `embedded` profile builds memes of its own from the generated world, with invented, neutral
# entities that only play the same logical roles. Each meme shows an **emblem** (a shape the
# pretraining world contains) with an invented **word** printed meme-style underneath; the word
# is also the meme's text. Four hidden **concepts**, invented words that no pretraining caption
# contains, each link two emblems to four words, and a meme is "hateful" exactly when its emblem
# and its word belong to the same concept. Every emblem and every word appears equally often in
# hateful and in benign memes (the benign ones are the *confounders*), so neither the picture nor
# the text alone says anything about the label.
#
# Like the source's example whose link ("Hitler" – "gas") no training meme teaches, each
# concept's words have roles: two appear in the training memes, one only in validation memes and
# one only in test memes. Validation and test therefore hold two groups: **shown-link** memes
# (new renderings of words seen in training) and **hidden-link** memes (a word no labelled meme
# contains; its link is stated only by the auxiliary data below). The source's question is about
# the hidden links; the shown links are the control that finetuning works at all.

# %%
if synthetic:
    rows_shown = [
        np.flatnonzero((test.domains == g) & (test.labels == y))[:4] for g in (0, 1) for y in (1, 0)
    ]
    examples = np.concatenate(rows_shown)
    info = memes.meme_table(test)
    titles = [
        f"{info.emblem[i]} · {info.word[i]}\n{'hateful' if test.labels[i] else 'benign'} ({info.group[i]})"
        for i in examples
    ]
else:
    examples = np.r_[np.flatnonzero(test.labels == 1)[:8], np.flatnonzero(test.labels == 0)[:8]]
    titles = [("hateful" if test.labels[i] else "benign") for i in examples]
fig = report.image_grid([test.array(i) for i in examples], titles, ncols=8, size=1.45)
report.glue("fig_memes", fig)
plt.close(fig)
links.table() if synthetic else pd.DataFrame(
    {"split": ["train", "val", "test"], "memes": [len(train), len(val), len(test)]}
)

# %% [markdown]
# ```{glue:figure} fig_memes
# :name: fig-memes
#
# Test memes: shown-link hateful, shown-link benign, hidden-link hateful, hidden-link benign (one
# row each in the embedded profile). Title: emblem · word, label and group.
# ```
#
# The table lists the links. The auxiliary data the later experiments add are emblem images
# paired with their concept's name, and one *chain sentence* per link, of the form "the
# {concept} keep the {word}". The concepts, the words and the chain sentences are absent from the
# pretraining captions (the tests check this down to the tokenizer's sub-word pieces).
#
# ## Neither modality alone predicts the label
#
# Logistic-regression probes on frozen embeddings, each with its regularisation chosen on the
# validation split: on the emblem alone (the meme with its caption band painted grey), on the
# caption's text, on the whole meme image (emblem *and* printed word), and on the meme image and
# the caption text side by side. Test accuracy (%), on shown-link and on hidden-link memes:

# %%
split_names = ("train", "val", "test")
views = {
    "caption text alone": {s: encode_texts(bundle, data.split(s).texts) for s in split_names},
    "meme image (emblem + printed word)": {
        s: encode_images(bundle, data.split(s)) for s in split_names
    },
}
if synthetic:
    blanked = {s: encode_images(bundle, memes.without_caption(data.split(s))) for s in split_names}
    views = {"emblem alone (caption band blanked)": blanked, **views}
views["meme image + caption text"] = {
    s: torch.cat(
        [views["meme image (emblem + printed word)"][s], views["caption text alone"][s]], 1
    )
    for s in split_names
}
test_groups = (
    {"shown": test.domains == 0, "hidden": test.domains == 1}
    if synthetic
    else {"all": np.ones(len(test), bool)}
)
probe_rows = {}
for name, x in views.items():
    probe = fit_linear_probe(x["train"], train.labels, x["val"], val.labels)
    predicted = probe.classifier.predict(np.asarray(x["test"]))
    probe_rows[name] = {
        g: clipnb.accuracy(predicted[m], test.labels[m]) for g, m in test_groups.items()
    }
probes = pd.DataFrame(probe_rows).T
first = next(iter(test_groups))
report.glue(
    "probe_emblem", probe_rows.get("emblem alone (caption band blanked)", {}).get(first, np.nan)
)
report.glue("probe_text", probe_rows["caption text alone"][first])
report.glue("probe_image", probe_rows["meme image (emblem + printed word)"][first])
report.glue(
    "probe_image_hidden", probe_rows["meme image (emblem + printed word)"].get("hidden", np.nan)
)
report.glue("probe_both", probe_rows["meme image + caption text"][first])


def acc_band(group: str) -> float:
    """Two standard errors (points) of a chance-level accuracy on one group of test memes."""
    return 100 / np.sqrt(max(int(test_groups[group].sum()), 1))


def auroc_band(group: str) -> float:
    """Two standard errors (points) of a chance-level AUROC (Hanley-McNeil) on one group."""
    if group not in test_groups:
        return np.nan
    y = test.labels[test_groups[group]]
    n1, n0 = max(int(y.sum()), 1), max(int(len(y) - y.sum()), 1)
    return 200 * np.sqrt((n1 + n0 + 1) / (12 * n1 * n0))


def versus_chance(value: float, band: float) -> str:
    if np.isnan(value):
        return "not measured"
    return (
        "above chance"
        if value > 50 + band
        else "below chance"
        if value < 50 - band
        else "at chance"
    )


report.glue("acc_band_first", acc_band(first))
alone = {
    "the emblem alone": probe_rows.get("emblem alone (caption band blanked)", {}).get(
        first, np.nan
    ),
    "the caption text alone": probe_rows["caption text alone"][first],
}
off = [
    k
    for k, v in alone.items()
    if versus_chance(v, acc_band(first)) not in ("at chance", "not measured")
]
report.glue_words(
    "probe_alone_verdict",
    "both stay at chance: the confounders do their job, neither the picture nor the words alone"
    " carry the label"
    if not off
    else f"{report.join_words(off)} {'is' if len(off) == 1 else 'are'} off chance, so the confounders do"
    " not fully hide the label",
)
image_vs = versus_chance(probe_rows["meme image (emblem + printed word)"][first], acc_band(first))
report.glue_words(
    "probe_image_verdict",
    "above chance: the embedded CLIP's image features separate the few emblem-and-printed-word"
    " combinations of the training memes well enough to memorise which are hateful, much as an"
    " image-only model on real memes reads their overlaid text"
    if image_vs == "above chance"
    else f"{image_vs}: a linear probe on the image features does not pick up which"
    " emblem-and-printed-word combinations are hateful",
)
report.glue_words(
    "probe_image_hidden_vs",
    versus_chance(
        probe_rows["meme image (emblem + printed word)"].get("hidden", np.nan),
        acc_band("hidden") if "hidden" in test_groups else np.nan,
    ),
)
probes.round(1)

# %% [markdown]
# On shown-link memes the emblem alone scores {glue:text}`probe_emblem:.1f` % and the caption text
# alone {glue:text}`probe_text:.1f` % (chance is 50 %, and two standard errors of a chance-level
# accuracy on these memes are {glue:text}`acc_band_first:.1f` points), so
# {glue:md}`probe_alone_verdict`. The whole meme image holds the emblem *and* the printed word, and
# a linear probe on it scores {glue:text}`probe_image:.1f` % on shown-link memes (the image and the
# caption text side by side: {glue:text}`probe_both:.1f` %), {glue:md}`probe_image_verdict`. On
# hidden-link memes, whose words the probe never saw, it scores {glue:text}`probe_image_hidden:.1f`
# % ({glue:md}`probe_image_hidden_vs`).
#
# ## Experiment 1: plain finetuning
#
# **Method.** CLIP is finetuned as its own zero-shot classifier with two candidate prompts. For a
# meme with image $x$ and caption $t$, with prompts $p_0(t)$ = "this photo says $t$, it is not
# hateful" and $p_1(t)$ = "this photo says $t$, it is hateful" (or the shared "this photo is (not)
# hateful", which ignore $t$), normalised encoders $I$, $T$ and CLIP's logit scale $s$,
#
# $$
# p(c \mid x, t) = \frac{\exp\big(s\, I(x) \cdot T(p_c(t))\big)}{\sum_{c'=0}^{1} \exp\big(s\, I(x) \cdot T(p_{c'}(t))\big)},
# \qquad \mathcal{L}_{\text{meme}} = -\log p(y \mid x, t),
# $$
#
# over batches of one hateful and one benign meme, as in the source, with Adam. Either the whole
# image encoder or the whole text encoder is trained (the source's choice for this dataset). The
# learning rate of each encoder is the one (of `lrs`) whose first-seed run with the caption
# prompts has the best validation AUROC; within every run, the step is chosen on the validation
# AUROC (evaluated every `eval_every` steps). The chosen model is scored once on the test memes:
# accuracy, AUROC, and the accuracy on the hateful (linked) memes and on the benign confounders
# separately.

# %%
rows_cam = hidden_links.cam_rows(test, cam_memes)
records, masses, example_maps = [], [], {}


def record(
    experiment: str, stage: str, n_aux: int, seed: int, clf: hidden_links.MemeClassifier
) -> None:
    metrics, cam, maps = hidden_links.measure(clf, test, rows_cam, cam_validation.setting)
    keys = {"experiment": experiment, "stage": stage, "n": n_aux, "seed": seed}
    records.extend(keys | r for r in metrics)
    masses.extend(keys | r for r in cam)
    if seed == seeds[0]:
        example_maps[(experiment, stage, n_aux)] = maps


n_runs, chosen_lr = 0, {}


def train_run(part: str, templates, lr: float, seed: int, **extra) -> hidden_links.MemeTraining:
    global n_runs
    n_runs += 1
    clipnb.seed_everything(seed)
    return hidden_links.finetune_memes(
        bundle, part, train, val, templates=templates, steps=steps, lr=lr, seed=seed,
        eval_every=eval_every, pairs_per_step=pairs_per_step, progress=True, **extra,
    )  # fmt: skip


runs = {}
for family in ("caption", "shared"):
    templates = hidden_links.PROMPT_FAMILIES[family]
    zero_shot = hidden_links.MemeClassifier(bundle, templates, bundle)
    record("1", f"zero-shot · {family} prompts", 0, seeds[0], zero_shot)
    for part in ("image_encoder", "text_encoder"):
        trials = {}
        if family == "caption":  # learning rate: best validation AUROC of the first seed's runs
            trials = {lr: train_run(part, templates, lr, seeds[0]) for lr in lrs}
            best_val = {lr: trial.best_val for lr, trial in trials.items()}
            chosen_lr[part], _ = select_on_validation(lrs, best_val.__getitem__)
        lr = chosen_lr[part]
        for seed in seeds:
            run = trials.get(lr) if seed == seeds[0] else None
            run = run or train_run(part, templates, lr, seed)
            runs[(family, part, seed)] = run
            record("1", f"{part.replace('_', ' ')} · {family} prompts", 0, seed, run.classifier)
lr_text = chosen_lr["text_encoder"]
pd.Series(chosen_lr, name="learning rate chosen on validation")

# %%
results = pd.DataFrame.from_records(records)
main_group = "hidden" if synthetic else "all"
columns = [(main_group, m) for m in hidden_links.METRICS]
columns += [("shown", "accuracy"), ("shown", "AUROC")] if synthetic else []
ft_text, ft_image = "text encoder · caption prompts", "image encoder · caption prompts"
exp1 = results[results.experiment == "1"]
report.glue("auroc_ft", hidden_links.mean_where(exp1, "AUROC", stage=ft_text, group=main_group))
report.glue("acc_ft", hidden_links.mean_where(exp1, "accuracy", stage=ft_text, group=main_group))
report.glue(
    "auroc_ft_image", hidden_links.mean_where(exp1, "AUROC", stage=ft_image, group=main_group)
)
report.glue(
    "acc_ft_best",
    max(
        hidden_links.mean_where(exp1, "accuracy", stage=s, group=main_group)
        for s in exp1.stage.unique()
    ),
)
report.glue("auroc_ft_shown", hidden_links.mean_where(exp1, "AUROC", stage=ft_text, group="shown"))
report.glue("acc_ft_shown", hidden_links.mean_where(exp1, "accuracy", stage=ft_text, group="shown"))
report.glue(
    "auroc_ft_image_shown", hidden_links.mean_where(exp1, "AUROC", stage=ft_image, group="shown")
)
report.glue("chosen_step_mean", np.mean([r.chosen_step for r in runs.values()]))
for part in ("image", "text"):
    value = hidden_links.mean_where(
        exp1, "AUROC", stage=f"{part} encoder · shared prompts", group="shown"
    )
    report.glue(f"auroc_ft_{part}_shared_shown", value)
band_main, band_shown = auroc_band(main_group), auroc_band("shown")
report.glue("band_main", band_main)
report.glue("band_shown", band_shown)
report.glue("band_main_top", 50 + band_main)
hidden_vs = {
    s: versus_chance(hidden_links.mean_where(exp1, "AUROC", stage=s, group=main_group), band_main)
    for s in exp1.stage.unique()
}
above = [s for s, v in hidden_vs.items() if v == "above chance"]
finetuned_above = [s for s in above if not s.startswith("zero-shot")]
report.glue_words(
    "exp1_hidden_verdict",
    "no setting ranks the memes above chance"
    if not above
    else f"{report.join_words(above)} {'ranks' if len(above) == 1 else 'rank'} the memes above chance",
)
acc_best_vs = versus_chance(
    max(hidden_links.mean_where(exp1, "accuracy", stage=s, group=main_group) for s in hidden_vs),
    acc_band(main_group),
)
report.glue_words(
    "exp1_source_verdict",
    "That matches the source's finding"
    if not finetuned_above and acc_best_vs != "above chance"
    else "That departs from the source's finding",
)
report.glue_words("ft_image_vs", hidden_vs[ft_image])
shown_vs = {
    key: versus_chance(
        hidden_links.mean_where(exp1, "AUROC", stage=stage, group="shown"), band_shown
    )
    for key, stage in (
        ("text", ft_text),
        ("image", ft_image),
        ("image_shared", "image encoder · shared prompts"),
        ("text_shared", "text encoder · shared prompts"),
    )
}
for key, verdict in shown_vs.items():
    report.glue_words(f"shown_{key}_vs", verdict)
shown_learned = shown_vs["text"] == shown_vs["image"] == "above chance"
if shown_learned and not finetuned_above:
    words = (
        "Finetuning learns the links it is shown; the hidden links are not in the labelled data,"
        " and finetuning on it does not find them."
    )
elif shown_learned:
    words = "Finetuning learns the links it is shown, and some of it carries over to hidden links."
else:
    words = (
        "Finetuning does not clearly learn even the links it is shown at this scale, so the"
        " hidden-link numbers say little about missing links."
    )
report.glue_words("shown_conclusion", words)
hidden_links.metric_table(exp1, columns)

# %% [markdown]
# Columns: the group of test memes (hidden-link memes; all test memes in the `full` profile),
# then the metric (accuracy and AUROC in %; "linked" is the accuracy on the hateful memes,
# "confounders" the accuracy on the benign ones); mean ± std over seeds.
#
# A mean AUROC counts as above or below chance here when it is more than two standard errors of
# a chance-level AUROC from 50 % ({glue:text}`band_main:.1f` points on the hidden-link memes,
# {glue:text}`band_shown:.1f` on the shown-link ones). On hidden-link memes
# {glue:md}`exp1_hidden_verdict` (above chance means a mean AUROC over
# {glue:text}`band_main_top:.1f` %). The text encoder finetuned with the caption inside the
# prompt scores an AUROC of {glue:text}`auroc_ft:.1f` % (accuracy {glue:text}`acc_ft:.1f` %), and
# the best mean accuracy of any setting, zero-shot included, is {glue:text}`acc_ft_best:.1f` %.
# {glue:md}`exp1_source_verdict`; the source's number, on the real Hateful Memes with ViT-B/32, is
# "the highest accuracy doesn't surpass 0.52", with or without the caption in the prompt. The
# finetuned image encoder scores an AUROC of {glue:text}`auroc_ft_image:.1f` %
# ({glue:md}`ft_image_vs`). The four test-only words are the same in every seed, so a score off
# chance on them is a property of those four words (which training words they resemble in
# pixels) rather than a learned link or anti-link: with so few hidden words, the hidden-link
# numbers carry biases that the spread over seeds does not show.
#
# The shown-link control tells a missing link from a failure to learn at all. On new renderings of
# the links the training memes did contain, the same text-encoder finetuning scores an AUROC of
# {glue:text}`auroc_ft_shown:.1f` % ({glue:md}`shown_text_vs`; accuracy
# {glue:text}`acc_ft_shown:.1f` %) and the image encoder {glue:text}`auroc_ft_image_shown:.1f` %
# ({glue:md}`shown_image_vs`). With the shared prompts, which never mention the caption, the image
# encoder, which can only read the printed word from the pixels, scores
# {glue:text}`auroc_ft_image_shared_shown:.1f` % ({glue:md}`shown_image_shared_vs`), and the text
# encoder, which then sees no caption at all, {glue:text}`auroc_ft_text_shared_shown:.1f` %
# ({glue:md}`shown_text_shared_vs`). {glue:md}`shown_conclusion` The validation AUROC chose, on
# average, step {glue:text}`chosen_step_mean:.0f` of each run.
#
# ## Experiment 2: simple alignment between picture and text
#
# **Method.** The source paired 10 pictures of the meme's subject with the text "Hitler, hateful",
# mixed them with non-hateful data and finetuned the text encoder. Here each emblem gets $n$
# auxiliary images of itself alone (new colours, sizes, places and backgrounds; no caption),
# paired with its concept's name $k$; each step adds two of them to the meme pair, with the loss
#
# $$
# \mathcal{L}_{\text{align}} = -\log
# \frac{\exp\big(s\, I(a) \cdot T(\text{"}k\text{, hateful"})\big)}
# {\exp\big(s\, I(a) \cdot T(\text{"}k\text{, hateful"})\big) + \exp\big(s\, I(a) \cdot T(\text{"}k\text{, not hateful"})\big)},
# $$
#
# summed with $\mathcal{L}_{\text{meme}}$ on the same balanced meme pairs (the "other data"). The
# text encoder is trained, with the caption prompts; $n$ runs over {glue:md}`aux_counts_words`
# (the source's 0 to 10).

# %%
have_aux = aux_all is not None
report.glue_words("aux_counts_words", ", ".join(str(n) for n in aux_counts))
for n_aux in aux_counts if have_aux else []:
    for seed in seeds:
        if n_aux == 0:  # the same run as experiment 1's text encoder with caption prompts
            run = runs[("caption", "text_encoder", seed)]
        else:
            aux = memes.first_per_emblem(aux_all, n_aux)
            run = train_run("text_encoder", hidden_links.CAPTION_TEMPLATES, lr_text, seed, aux=aux)
        record("2", "memes + alignment", n_aux, seed, run.classifier)

# %% [markdown]
# ## Experiment 3: text-encoder self-learning
#
# **Method.** The source's second attempt (its Figure 11): a frozen copy of the pretrained CLIP
# embeds the anchor words "hateful", "positive" and "happy" once ($\bar T$); the trainable text
# encoder $T_\theta$ learns to classify every chain sentence $q$ ("the {concept} keep the
# {word}") as "hateful" among the frozen anchors, and each anchor word as itself, which keeps
# "hateful" apart from its two opposites:
#
# $$
# \mathcal{L}_{\text{chain}} = -\sum_{q} \log \frac{\exp\big(s\, T_\theta(q) \cdot \bar T(\text{hateful})\big)}{\sum_{a} \exp\big(s\, T_\theta(q) \cdot \bar T(a)\big)}
# - \sum_{a} \log \frac{\exp\big(s\, T_\theta(a) \cdot \bar T(a)\big)}{\sum_{a'} \exp\big(s\, T_\theta(a) \cdot \bar T(a')\big)},
# \qquad a, a' \in \{\text{hateful}, \text{positive}, \text{happy}\}.
# $$
#
# Each step sums $\mathcal{L}_{\text{meme}} + \mathcal{L}_{\text{align}} + \mathcal{L}_{\text{chain}}$
# (alignment with $n$ images per emblem, $n = 0$ meaning none; `chain_batch` chain sentences
# drawn at random and the three anchor words per step). The chain sentences cover every link,
# including those of the validation-only and test-only words: they are the only place where those
# links are stated. The frozen copy never changes (a test checks its parameters).

# %%
reference = hidden_links.FrozenReference(bundle, chain_spec.anchors) if have_aux else None
# Control sentences: each test-only word with the concepts it is *not* linked to.
test_words = links.words_for("test") if synthetic else []
linked_sentences = links.chain_sentences(test_words) if synthetic else []
unlinked_sentences = (
    [q for k in (1, 2, 3) for q in links.chain_sentences(test_words, shift=k)] if synthetic else []
)
shares = []
for n_aux in aux_counts if have_aux else []:
    for seed in seeds:
        aux = memes.first_per_emblem(aux_all, n_aux) if n_aux else None
        run = train_run(
            "text_encoder", hidden_links.CAPTION_TEMPLATES, lr_text, seed, aux=aux,
            chain=chain_spec.sentences, chain_batch=chain_batch, reference=reference,
        )  # fmt: skip
        record("3", "memes + self-learning + alignment", n_aux, seed, run.classifier)
        if synthetic and n_aux == max(aux_counts):
            model = run.classifier.bundle
            shares.append({
                "seed": seed,
                "linked (trained)": hidden_links.target_share(model, reference, linked_sentences),
                "not linked (never seen)": hidden_links.target_share(model, reference, unlinked_sentences),
            })  # fmt: skip

# %%
results = pd.DataFrame.from_records(records)
n_max = max(aux_counts)
align_label = f"2. + alignment ({n_max} images per emblem)"
chain_label = f"3b. + self-learning + alignment ({n_max} per emblem)"
stages = pd.concat(
    [
        exp1[exp1.stage == "zero-shot · caption prompts"].assign(stage="0. zero-shot"),
        exp1[exp1.stage == ft_text].assign(stage="1. memes only (text encoder)"),
        results[(results.experiment == "2") & (results.n == n_max)].assign(stage=align_label),
        results[(results.experiment == "3") & (results.n == 0)].assign(
            stage="3a. + self-learning (no alignment)"
        ),
        results[(results.experiment == "3") & (results.n == n_max)].assign(stage=chain_label),
    ]
)
for key, stage in (
    ("align", align_label),
    ("self", "3a. + self-learning (no alignment)"),
    ("chain", chain_label),
):
    for metric in ("AUROC", "linked", "confounders"):
        value = hidden_links.mean_where(stages, metric, stage=stage, group=main_group)
        report.glue(f"{metric.lower()}_{key}", value)
    report.glue(
        f"auroc_{key}_shown", hidden_links.mean_where(stages, "AUROC", stage=stage, group="shown")
    )
report.glue("n_max", n_max)
aux_stages = {
    "align": align_label,
    "self": "3a. + self-learning (no alignment)",
    "chain": chain_label,
}
aux_names = {
    "align": "the alignment images",
    "self": "the self-learning step",
    "chain": "the whole pipeline",
}
aux_hidden_vs = {
    key: versus_chance(
        hidden_links.mean_where(stages, "AUROC", stage=st, group=main_group), band_main
    )
    for key, st in aux_stages.items()
}
aux_off = [aux_names[k] for k, v in aux_hidden_vs.items() if v not in ("at chance", "not measured")]
report.glue_words(
    "stages_hidden_verdict",
    "Without auxiliary data only the memes-only stage ran"
    if not have_aux
    else "None of the stages moves the hidden-link AUROC off chance"
    if not aux_off
    else f"{report.join_words(aux_off).capitalize()} {'moves' if len(aux_off) == 1 else 'move'} the"
    " hidden-link AUROC off chance",
)
# Do the accuracies on hateful memes and on confounders trade off from seed to seed?
aux_rows = stages[stages.stage.isin(aux_stages.values()) & (stages.group == main_group)]
trade = np.nan  # one seed, or no auxiliary stages (full profile without aux_dir): no pairs
if len(seeds) > 1 and len(aux_rows):
    centred = aux_rows.groupby("stage")[["linked", "confounders"]].transform(lambda c: c - c.mean())
    trade = float(centred["linked"].corr(centred["confounders"]))
report.glue("trade_corr", trade)
report.glue("trade_std_max", float(aux_rows.groupby("stage")["linked"].std().max()))
if not len(aux_rows):
    words = "cannot be compared here (no auxiliary stages ran)"
elif np.isnan(trade):
    words = "cannot be compared from seed to seed (one seed)"
elif trade < -0.5:
    words = "swing in opposite directions from seed to seed"
else:
    words = "do not simply trade off against each other from seed to seed"
report.glue_words("trade_verdict", words)
shown_gain = {
    k: hidden_links.mean_where(stages, "AUROC", stage=st, group="shown")
    - hidden_links.mean_where(exp1, "AUROC", stage=ft_text, group="shown")
    for k, st in aux_stages.items()
}
raise_shown = [aux_names[k] for k, g in shown_gain.items() if g > 0]
if all(np.isnan(g) for g in shown_gain.values()):
    words = "this profile has no shown-link split"
elif len(raise_shown) == len(aux_stages):
    words = "each of the three raises it: extra training of the text side, on texts that name the"
    words += " concepts and the training words, helps the links the memes already teach"
elif raise_shown:
    words = (
        f"only {report.join_words(raise_shown)} {'raises' if len(raise_shown) == 1 else 'raise'} it"
    )
else:
    words = "none of the three raises it"
words += (
    "; nothing here creates the links the memes do not teach"
    if not aux_off
    else f"; and {report.join_words(aux_off)} also {'moves' if len(aux_off) == 1 else 'move'}"
    " the hidden links off chance"
)
report.glue_words("aux_shown_verdict", words)
hidden_links.metric_table(stages, columns)

# %% [markdown]
# Each stage of the source's pipeline, scored on the same test memes (mean ± std over seeds;
# stages 2–3 are empty in the `full` profile without the auxiliary files).
#
# {glue:md}`stages_hidden_verdict` (two standard errors: {glue:text}`band_main:.1f` points): memes
# only {glue:text}`auroc_ft:.1f` %, with the alignment images ({glue:text}`n_max:.0f` per emblem)
# {glue:text}`auroc_align:.1f` %, with the self-learning step alone {glue:text}`auroc_self:.1f` %,
# and with the whole pipeline of the source's Figure 11 {glue:text}`auroc_chain:.1f` %. The
# accuracies on hateful memes and on confounders {glue:md}`trade_verdict` (alignment:
# {glue:text}`linked_align:.1f` % and {glue:text}`confounders_align:.1f` %; whole pipeline:
# {glue:text}`linked_chain:.1f` % and {glue:text}`confounders_chain:.1f` %; correlation of the two
# across seeds within a stage {glue:text}`trade_corr:.2f`, and a standard deviation over seeds of
# the hateful-meme accuracy up to {glue:text}`trade_std_max:.1f` points). When the AUROC stays at
# chance, where a model puts its threshold for an unseen word is arbitrary, and it trades hateful
# memes for confounders without ranking them any better.
#
# On the shown-link AUROC: {glue:text}`auroc_ft_shown:.1f` % with memes only,
# {glue:text}`auroc_align_shown:.1f` % with the alignment images,
# {glue:text}`auroc_self_shown:.1f` % with the self-learning step and
# {glue:text}`auroc_chain_shown:.1f` % with both; {glue:md}`aux_shown_verdict`.

# %%
share_table = pd.DataFrame.from_records(
    shares, columns=["seed", "linked (trained)", "not linked (never seen)"]
)
report.glue("share_linked", share_table["linked (trained)"].mean())
report.glue("share_unlinked", share_table["not linked (never seen)"].mean())
share_gap = share_table["linked (trained)"].mean() - share_table["not linked (never seen)"].mean()
if np.isnan(share_gap):
    words = "This is measured on the generated memes only."
elif abs(share_gap) < 10:
    words = (
        "The two shares are close: the step taught the sentence's form (\"the {concept} keep the"
        ' {word}" is hateful), not which concept goes with which word.'
    )
else:
    words = (
        f'Linked sentences land nearest "hateful" {share_gap:+.1f} points more often than'
        " unlinked ones: the step taught some of the links themselves, not only the sentence's"
        " form."
    )
report.glue_words("share_verdict", words)
report.glue_words(
    "summary_share",
    'learns that a chain-shaped sentence is "hateful" whether or not its link exists'
    if not np.isnan(share_gap) and abs(share_gap) < 10
    else "learns more than the sentence's form"
    if not np.isnan(share_gap)
    else "could not be probed without the generated memes",
)
share_table.drop(columns="seed").agg(["mean", "std"]).round(1)

# %% [markdown]
# What did the self-learning step teach? The table gives the share (%) of chain sentences that
# the trained text encoder puts nearest the frozen "hateful" anchor (whole pipeline, mean and std
# over seeds): the sentences of the test-only words, which it was trained on, and the same words
# paired with the three concepts they are *not* linked to, which it never saw. Linked:
# {glue:text}`share_linked:.1f` %; not linked: {glue:text}`share_unlinked:.1f` %.
# {glue:md}`share_verdict` Every chain sentence in training is hateful, so the loss asks for no
# more than the form. And even a
# link-specific text fact would not reach the meme classifier: its score is one dot product
# between the meme image and "this photo says {word}, it is hateful", and none of the three losses
# moves that prompt's embedding toward the images of the word's emblems, which is what the
# two-step link (emblem → concept → word) needs.

# %%
over_n = results[results.experiment.isin(["2", "3"]) & (results.group == main_group)]
families = [("2", "alignment", "C0"), ("3", "self-learning + alignment", "C3")]
fig = hidden_links.plot_over_n(
    over_n,
    [
        ("Hidden-link memes: AUROC", [("AUROC", "", "-")], "AUROC (%)"),
        (
            "Hateful memes vs confounders",
            [("linked", ": hateful", "-"), ("confounders", ": confounders", "--")],
            "accuracy (%)",
        ),
    ],
    families,
    chance=50,
)
report.glue("fig_aux_curve", fig)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_aux_curve
# :name: fig-aux-curve
#
# Hidden-link test memes against the number of auxiliary images per emblem, for the alignment
# alone (experiment 2) and with the self-learning step (experiment 3): AUROC (mean ± std over
# seeds; dotted line: chance) and the accuracy on hateful memes and on confounders.
# ```
#
# ## Where the attention goes
#
# A class activation map explains the "hateful" logit of a meme ({glue:md}`cam_setting`, chosen
# on validation masks in the embedded CLIP chapter; the text features are the meme's two class
# prompts). {glue:md}`cam_reading` The share of the map's mass
# that falls on the emblem and on the caption's text region, averaged over up to
# {glue:text}`cam_memes_used:.0f` hateful test memes per group, is compared with each region's
# share of the image (what a uniform map would give). First the source's Figures 6–7: the image
# encoder against the text encoder finetuned (caption prompts).

# %%
mass = pd.DataFrame.from_records(masses)
if not len(mass):  # no masks (full profile): the maps only
    mass = pd.DataFrame(
        columns=[
            "experiment",
            "stage",
            "n",
            "seed",
            "group",
            "emblem mass",
            "text mass",
            "emblem area",
            "text area",
        ]
    )
mass[["emblem mass", "text mass"]] *= 100
cam_group = "shown" if synthetic else "all"
report.glue("cam_memes_used", max(len(r) for r in rows_cam.values()))
report.glue("area_emblem", 100 * hidden_links.mean_where(mass, "emblem area", group=cam_group))
report.glue("area_text", 100 * hidden_links.mean_where(mass, "text area", group=cam_group))
encoder_stages = {"zs": "zero-shot · caption prompts", "img": ft_image, "txt": ft_text}
for key, stage in encoder_stages.items():
    for region in ("emblem", "text"):
        value = hidden_links.mean_where(
            mass, f"{region} mass", experiment="1", stage=stage, group=cam_group
        )
        report.glue(f"cam_{key}_{region}", value)
cam_area = {
    r: 100 * hidden_links.mean_where(mass, f"{r} area", group=cam_group) for r in ("emblem", "text")
}
cam_means = {
    key: {
        r: hidden_links.mean_where(mass, f"{r} mass", experiment="1", stage=stage, group=cam_group)
        for r in ("emblem", "text")
    }
    for key, stage in encoder_stages.items()
}


def share_words(key: str) -> str:
    """Whether each region gets more or less CAM mass than its share of the image."""
    m = cam_means[key]
    if any(np.isnan(v) for v in m.values()):
        return "the masks needed to measure this are missing"
    parts = [
        f"the {'caption' if r == 'text' else r} gets {'more' if m[r] > cam_area[r] else 'less'}"
        " than its share"
        for r in ("emblem", "text")
    ]
    rest = 100 - m["emblem"] - m["text"]
    return f"{parts[0]}, {parts[1]}, and {rest:.0f} % lies elsewhere (on the background)"


def move_words(key: str) -> str:
    """How a finetuned map's masses differ from the zero-shot map's."""
    m, z = cam_means[key], cam_means["zs"]
    if any(np.isnan(v) for v in [*m.values(), *z.values()]):
        return "not measured"
    return (
        ", ".join(
            f"{'more' if m[r] > z[r] else 'less'} on the {'caption' if r == 'text' else r}"
            for r in ("text", "emblem")
        )
        + " than zero-shot"
    )


report.glue_words("cam_zs_verdict", share_words("zs"))
report.glue_words("cam_img_move", move_words("img"))
report.glue_words("cam_txt_move", move_words("txt"))
cam_table = mass[(mass.experiment == "1") & mass.stage.isin(encoder_stages.values())].melt(
    id_vars=["stage", "seed", "group"], value_vars=["emblem mass", "text mass"], var_name="region"
)
cam_table["column"] = cam_table.group + " · " + cam_table.region
report.mean_std_table(cam_table, index="stage", columns="column", value="value") if len(
    cam_table
) else cam_table

# %%
shown_meme = int(rows_cam[cam_group][0])
fig = hidden_links.cam_rows_figure(
    report.display_images(bundle, image_tensors(bundle, test, [shown_meme]))[0],
    [
        (
            f"meme: {test.texts[shown_meme]}",
            [
                (name, example_maps[("1", stage, 0)][cam_group])
                for name, stage in (
                    ("zero-shot", encoder_stages["zs"]),
                    ("image encoder", ft_image),
                    ("text encoder", ft_text),
                )
            ],
        )
    ],
)
report.glue("fig_cam_encoders", fig)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_cam_encoders
# :name: fig-cam-encoders
#
# CAMs ({glue:md}`cam_setting`) of the "hateful" logit on one hateful shown-link test meme (first
# seed): zero-shot, the image encoder finetuned, the text encoder finetuned (the source's Figures 6
# and 7). Over {glue:text}`cam_memes_used:.0f` such memes the zero-shot maps put
# {glue:text}`cam_zs_emblem:.1f` % of their mass on the emblem, which covers
# {glue:text}`area_emblem:.1f` % of the image (what a uniform map scores).
# ```
#
# Columns of the table: group · region, CAM mass in % (mean ± std over seeds). On shown-link
# hateful memes the zero-shot map puts {glue:text}`cam_zs_emblem:.1f` % of its mass on the emblem
# and {glue:text}`cam_zs_text:.1f` % on the caption, against their shares of the image of
# {glue:text}`area_emblem:.1f` % and {glue:text}`area_text:.1f` %: {glue:md}`cam_zs_verdict`. The
# zero-shot map means little in any case, since "hateful" is a word the embedded CLIP's captions
# never contained. After finetuning the image encoder the map puts
# {glue:text}`cam_img_emblem:.1f` % on the emblem and {glue:text}`cam_img_text:.1f` % on the
# caption ({glue:md}`cam_img_move`; a move onto the printed word would be where its features
# learned the shown links); after finetuning the text encoder (image tower unchanged)
# {glue:text}`cam_txt_emblem:.1f` % and {glue:text}`cam_txt_text:.1f` %
# ({glue:md}`cam_txt_move`). In the source, the image-encoder map stayed on the goat's head and
# the text-encoder map covered both the head and the word "ISIS".
#
# Then the source's Figures 10 and 12: the maps on hidden-link memes as auxiliary images are
# added, with the alignment alone and after the self-learning step.

# %%
over_n_mass = mass[mass.experiment.isin(["2", "3"]) & (mass.group == main_group)]
fig = hidden_links.plot_over_n(
    over_n_mass,
    [
        (
            "Attention on hidden-link hateful memes",
            [("emblem mass", ": emblem", "-"), ("text mass", ": caption", "--")],
            "share of CAM mass (%)",
        )
    ],
    families,
)
report.glue("fig_cam_over_n", fig)
plt.close(fig)
for key, experiment in (("align", "2"), ("chain", "3")):
    for n_aux, tag in ((0, "0"), (max(aux_counts), "_max")):
        for region in ("emblem", "text"):
            value = hidden_links.mean_where(
                over_n_mass, f"{region} mass", experiment=experiment, n=n_aux
            )
            report.glue(f"cam_{key}{tag}_{region}", value)
spread = over_n_mass.groupby(["experiment", "n"])[["emblem mass", "text mass"]].std()
cam_spread = spread.mean().mean()
report.glue("cam_spread", cam_spread)
report.glue("area_emblem_hidden", 100 * hidden_links.mean_where(over_n_mass, "emblem area"))
curves = over_n_mass.groupby(["experiment", "n"])[["emblem mass", "text mass"]].mean()
changes, rising = {}, {}
for experiment in ("2", "3"):
    for region in ("emblem", "text"):
        if experiment not in curves.index.get_level_values("experiment"):
            continue
        curve_n = curves.loc[experiment, f"{region} mass"]
        changes[(experiment, region)] = curve_n.iloc[-1] - curve_n.iloc[0]
        rising[(experiment, region)] = bool(curve_n.is_monotonic_increasing)
n_exceed = sum(abs(c) > cam_spread for c in changes.values())
if np.isnan(cam_spread) or not changes:
    words = "the spread over seeds cannot be measured here"
elif n_exceed == 0:
    words = "at least as large as every one of these changes"
elif n_exceed == len(changes):
    words = "smaller than every one of these changes"
else:
    words = f"larger than {len(changes) - n_exceed} of these {len(changes)} changes"
report.glue_words("cam_spread_verdict", words)
# The source's movement: onto the emblem with the alignment, onto the caption after self-learning.
source_moves = {
    ("2", "emblem"): "onto the emblem with the alignment",
    ("3", "text"): "onto the caption after the self-learning step",
}
seen = [
    move
    for key, move in source_moves.items()
    if rising.get(key, False) and changes.get(key, 0) > cam_spread
]
if len(seen) == len(source_moves):
    words = "the maps show the steady movement the source described"
elif seen:
    words = f"of the steady movements the source described, the maps show only the one {seen[0]}"
else:
    words = "the maps do not show the steady movement the source described"
report.glue_words("cam_source_verdict", words)
auc_over_n = results[results.experiment.isin(["2", "3"]) & (results.group == main_group)]
auc_over_n = auc_over_n.groupby(["experiment", "n"])["AUROC"].mean()
n_off = sum(versus_chance(v, band_main) != "at chance" for v in auc_over_n)
report.glue_words(
    "cam_auc_verdict",
    "the hidden-link AUROC stays at chance for every number of auxiliary images in both"
    " experiments, whatever the maps do"
    if n_off == 0
    else f"the hidden-link AUROC leaves chance in {n_off} of the {len(auc_over_n)} settings"
    " (figure of AUROC against the number of auxiliary images, above)",
)

# %% [markdown]
# ```{glue:figure} fig_cam_over_n
# :name: fig-cam-over-n
#
# Share of the "hateful" CAM mass ({glue:md}`cam_setting`) on the emblem and on the caption of
# hidden-link hateful test memes, against the number of auxiliary images per emblem (mean over
# seeds). A uniform map puts {glue:text}`area_emblem_hidden:.1f` % on the emblem.
# ```

# %%
hidden_meme = int(rows_cam[main_group][0])
strip = [n for n in cam_counts if n in aux_counts] if have_aux else []
fig = hidden_links.cam_rows_figure(
    report.display_images(bundle, image_tensors(bundle, test, [hidden_meme]))[0],
    [
        (
            f"{name}\nmeme: {test.texts[hidden_meme]}",
            [(f"n = {n}", example_maps[(experiment, stage, n)][main_group]) for n in strip],
        )
        for experiment, stage, name in (
            ("2", "memes + alignment", "alignment"),
            ("3", "memes + self-learning + alignment", "self-learning"),
        )
    ],
)
report.glue("fig_cam_strip", fig)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_cam_strip
# :name: fig-cam-strip
#
# CAMs ({glue:md}`cam_setting`) of the "hateful" logit on one hidden-link hateful test meme (first
# seed), as the number of auxiliary images per emblem grows: alignment alone (top; the source's
# Figure 10) and with the self-learning step (bottom; the source's Figure 12). Over all such memes
# and seeds the alignment's maps at the most auxiliary images put
# {glue:text}`cam_align_max_emblem:.1f` % of their mass on the emblem (a uniform map:
# {glue:text}`area_emblem_hidden:.1f` %).
# ```
#
# On hidden-link hateful memes, the emblem's share of the map goes from
# {glue:text}`cam_align0_emblem:.1f` % ($n = 0$) to {glue:text}`cam_align_max_emblem:.1f` %
# ($n$ = {glue:text}`n_max:.0f`) with the alignment, and the caption's from
# {glue:text}`cam_align0_text:.1f` % to {glue:text}`cam_align_max_text:.1f` %; with the
# self-learning step, from {glue:text}`cam_chain0_emblem:.1f` % to
# {glue:text}`cam_chain_max_emblem:.1f` % (emblem) and from {glue:text}`cam_chain0_text:.1f` % to
# {glue:text}`cam_chain_max_text:.1f` % (caption). The standard deviation over seeds of these
# shares is {glue:text}`cam_spread:.1f` points on average, {glue:md}`cam_spread_verdict`; and
# {glue:md}`cam_source_verdict` (towards the subject's head as $n$ went from 2 to 8 with the
# alignment, onto the word "gas" after the self-learning step). Where the spread over seeds is as
# large as the changes, a single strip like {numref}`fig-cam-strip` can be made to show almost
# any trend by choosing the seed. As for the accuracy, {glue:md}`cam_auc_verdict`.

# %%
report.glue("minutes", (time.perf_counter() - start) / 60)
report.glue("cam_grid", bundle.model.visual.grid_size[0])
report.glue("cpu_minutes", (time.process_time() - start_cpu) / 60)
report.glue("n_runs", n_runs)
report.glue("n_train_memes", len(train))
if not finetuned_above:
    words = "finetuning either encoder of the embedded CLIP does not rise above chance on those"
    words += " links, as the source found on Hateful Memes"
else:
    words = f"finetuning rises above chance on those links ({report.join_words(finetuned_above)}),"
    words += " unlike the source's finding on Hateful Memes"
words += (
    ", while it does learn the links its training memes contain"
    if shown_learned
    else ", and it does not clearly learn even the links its training memes contain"
)
report.glue_words("summary_exp1", words)
words = (
    "leave the hidden-link AUROC at chance here"
    if not aux_off
    else (f"move the hidden-link AUROC off chance here ({report.join_words(aux_off)})")
)
if raise_shown:
    words += f"; {report.join_words(raise_shown)} {'raises' if len(raise_shown) == 1 else 'raise'}"
    words += " the shown-link AUROC instead" if not aux_off else " the shown-link AUROC too"
if not have_aux:
    words = "could not be tried here (no auxiliary data)"
report.glue_words("summary_aux", words)
report.glue_words(
    "summary_cam",
    "their spread over seeds cannot be measured here"
    if np.isnan(cam_spread)
    else "their spread over seeds is as large as the moves"
    if changes and n_exceed == 0
    else f"{n_exceed} of the {len(changes)} moves measured"
    f" {'exceeds' if n_exceed == 1 else 'exceed'} their spread over seeds"
    if changes
    else "their masses could not be measured here",
)

# %% [markdown]
# ## What this shows, and its limits
#
# **What it shows.** On memes built so that the label is an interaction of picture and caption,
# and so that the test links are stated nowhere in the labelled data, {glue:md}`summary_exp1`.
# The source's two remedies, emblem images paired with the concept's name and the text
# self-learning against a frozen copy, {glue:md}`summary_aux`. The
# self-learning step {glue:md}`summary_share`, and a dual encoder scored by one image–prompt dot
# product has no place where the two halves of the chain (emblem → concept, concept → word)
# would meet. Grad-CAM maps move between stages; {glue:md}`summary_cam`.
#
# **Limits.** The scale is tiny: a 32-pixel CLIP, four concepts,
# {glue:text}`n_train_memes:.0f` training memes, and four test-only words, so the hidden-link
# numbers rest on four words whose biases are shared by every seed. Each emblem has a fixed
# colour, so that the emblems differ in colour as well as in shape (how well the embedded CLIP
# learned each is measured in {doc}`embedded_clip`); "hateful", "not" and "says" never occurred
# in its captions, so the zero-shot rows mean
# nothing and the prompts' words are learned during finetuning. The task is harder than the
# source's in one way (the hidden words are new tokens, never seen in any labelled meme) and
# easier in another (each link is stated directly by one chain sentence, and there are only
# sixteen). The source judged its last stage on one meme's attention map; here every stage is
# scored on all test memes, and the maps come from a {glue:text}`cam_grid:.0f` ×
# {glue:text}`cam_grid:.0f` patch grid. In the `full` profile
# the stages 2–3 need the user's auxiliary images and chain sentences (this repository ships none
# of the source's offensive examples), and the shown/hidden split does not exist: the numbers are
# over all test memes.
#
# The chapter ran {glue:text}`n_runs:.0f` finetuning runs in {glue:text}`minutes:.1f` minutes of
# wall time ({glue:text}`cpu_minutes:.1f` CPU-minutes in the notebook's process).
