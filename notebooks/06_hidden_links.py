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
from clipnb import chain, memes, report
from clipnb.evaluation import fit_linear_probe, select_on_validation
from clipnb.features import encode_images, encode_texts
from clipnb.profiles import load_model

start, start_cpu = time.perf_counter(), time.process_time()
report.set_style()
clipnb.seed_everything(seeds[0])
bundle = load_model(profile)
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
probes.round(1)

# %% [markdown]
# On shown-link memes the emblem alone scores {glue:text}`probe_emblem:.1f` % and the caption
# text alone {glue:text}`probe_text:.1f` % (chance 50 %): the confounders do their job, neither
# the picture nor the words carry the label. The whole meme image is a different matter: it
# holds the emblem *and* the printed word, and a linear probe on it reaches
# {glue:text}`probe_image:.1f` % on shown-link memes (the image and the caption text side by side:
# {glue:text}`probe_both:.1f` %). The embedded CLIP's image features separate the few
# emblem-and-printed-word combinations of the training memes well enough to memorise which are
# hateful, much as an image-only model on real memes reads their overlaid text. On hidden-link
# memes, whose words the probe never saw, it scores {glue:text}`probe_image_hidden:.1f` %.
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
rows_cam = chain.cam_rows(test, cam_memes)
records, masses, example_maps = [], [], {}


def record(experiment: str, stage: str, n_aux: int, seed: int, clf: chain.MemeClassifier) -> None:
    metrics, cam, maps = chain.measure(clf, test, rows_cam)
    keys = {"experiment": experiment, "stage": stage, "n": n_aux, "seed": seed}
    records.extend(keys | r for r in metrics)
    masses.extend(keys | r for r in cam)
    if seed == seeds[0]:
        example_maps[(experiment, stage, n_aux)] = maps


n_runs, chosen_lr = 0, {}


def train_run(part: str, templates, lr: float, seed: int, **extra) -> chain.MemeTraining:
    global n_runs
    n_runs += 1
    clipnb.seed_everything(seed)
    return chain.finetune_memes(
        bundle, part, train, val, templates=templates, steps=steps, lr=lr, seed=seed,
        eval_every=eval_every, pairs_per_step=pairs_per_step, progress=True, **extra,
    )  # fmt: skip


runs = {}
for family in ("caption", "shared"):
    templates = chain.PROMPT_FAMILIES[family]
    zero_shot = chain.MemeClassifier(bundle, templates, bundle)
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
columns = [(main_group, m) for m in chain.METRICS]
columns += [("shown", "accuracy"), ("shown", "AUROC")] if synthetic else []
ft_text, ft_image = "text encoder · caption prompts", "image encoder · caption prompts"
exp1 = results[results.experiment == "1"]
report.glue("auroc_ft", chain.mean_where(exp1, "AUROC", stage=ft_text, group=main_group))
report.glue("acc_ft", chain.mean_where(exp1, "accuracy", stage=ft_text, group=main_group))
report.glue("auroc_ft_image", chain.mean_where(exp1, "AUROC", stage=ft_image, group=main_group))
report.glue(
    "acc_ft_best",
    max(chain.mean_where(exp1, "accuracy", stage=s, group=main_group) for s in exp1.stage.unique()),
)
report.glue("auroc_ft_shown", chain.mean_where(exp1, "AUROC", stage=ft_text, group="shown"))
report.glue("acc_ft_shown", chain.mean_where(exp1, "accuracy", stage=ft_text, group="shown"))
report.glue("auroc_ft_image_shown", chain.mean_where(exp1, "AUROC", stage=ft_image, group="shown"))
report.glue("chosen_step_mean", np.mean([r.chosen_step for r in runs.values()]))
for part in ("image", "text"):
    value = chain.mean_where(exp1, "AUROC", stage=f"{part} encoder · shared prompts", group="shown")
    report.glue(f"auroc_ft_{part}_shared_shown", value)
chain.metric_table(exp1, columns)

# %% [markdown]
# Columns: the group of test memes (hidden-link memes; all test memes in the `full` profile),
# then the metric (accuracy and AUROC in %; "linked" is the accuracy on the hateful memes,
# "confounders" the accuracy on the benign ones); mean ± std over seeds.
#
# On hidden-link memes nothing beats chance. The text encoder finetuned with the caption inside
# the prompt reaches an AUROC of {glue:text}`auroc_ft:.1f` % (accuracy {glue:text}`acc_ft:.1f` %),
# and the best mean accuracy of any setting, zero-shot included, is
# {glue:text}`acc_ft_best:.1f` %. That is the source's finding; its number, on the real Hateful
# Memes with ViT-B/32, is "the highest accuracy doesn't surpass 0.52", with or without the caption
# in the prompt. The finetuned image encoder even ranks them worse than chance (AUROC
# {glue:text}`auroc_ft_image:.1f` %). The four test-only words are the same in every seed, so this
# is a property of those four words (which training words they resemble in pixels), not a learned
# anti-link: with so few hidden words, the hidden-link numbers carry biases that the spread over
# seeds does not show.
#
# The shown-link control says why. On new renderings of the links the training memes did
# contain, the same text-encoder finetuning reaches an AUROC of {glue:text}`auroc_ft_shown:.1f` %
# (accuracy {glue:text}`acc_ft_shown:.1f` %) and the image encoder
# {glue:text}`auroc_ft_image_shown:.1f` %. Even with the shared prompts, which never mention the
# caption, the image encoder reaches {glue:text}`auroc_ft_image_shared_shown:.1f` % by reading the
# printed word from the pixels, while the text encoder with shared prompts, which then sees no
# caption at all, stays at {glue:text}`auroc_ft_text_shared_shown:.1f` %. Finetuning learns the
# links it is shown; the hidden links are not in the labelled data, and no amount of finetuning
# on it can find them. The validation AUROC chose, on average, step
# {glue:text}`chosen_step_mean:.0f` of each run.
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
# text encoder is trained, with the caption prompts; $n$ runs over the source's 0 to 10.

# %%
have_aux = aux_all is not None
for n_aux in aux_counts if have_aux else []:
    for seed in seeds:
        if n_aux == 0:  # the same run as experiment 1's text encoder with caption prompts
            run = runs[("caption", "text_encoder", seed)]
        else:
            aux = memes.first_per_emblem(aux_all, n_aux)
            run = train_run("text_encoder", chain.CAPTION_TEMPLATES, lr_text, seed, aux=aux)
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
reference = chain.FrozenReference(bundle, chain_spec.anchors) if have_aux else None
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
            "text_encoder", chain.CAPTION_TEMPLATES, lr_text, seed, aux=aux,
            chain=chain_spec.sentences, chain_batch=chain_batch, reference=reference,
        )  # fmt: skip
        record("3", "memes + self-learning + alignment", n_aux, seed, run.classifier)
        if synthetic and n_aux == max(aux_counts):
            model = run.classifier.bundle
            shares.append({
                "seed": seed,
                "linked (trained)": chain.target_share(model, reference, linked_sentences),
                "not linked (never seen)": chain.target_share(model, reference, unlinked_sentences),
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
        value = chain.mean_where(stages, metric, stage=stage, group=main_group)
        report.glue(f"{metric.lower()}_{key}", value)
    report.glue(f"auroc_{key}_shown", chain.mean_where(stages, "AUROC", stage=stage, group="shown"))
report.glue("n_max", n_max)
chain.metric_table(stages, columns)

# %% [markdown]
# Each stage of the source's pipeline, scored on the same test memes (mean ± std over seeds;
# stages 2–3 are empty in the `full` profile without the auxiliary files).
#
# None of the stages moves the hidden-link AUROC off chance: memes only
# {glue:text}`auroc_ft:.1f` %, with the alignment images ({glue:text}`n_max:.0f` per emblem)
# {glue:text}`auroc_align:.1f` %, with the self-learning step alone {glue:text}`auroc_self:.1f` %,
# and with the whole pipeline of the source's Figure 11 {glue:text}`auroc_chain:.1f` %. The
# accuracies on hateful memes and on confounders swing in opposite directions from seed to seed
# (alignment: {glue:text}`linked_align:.1f` % and {glue:text}`confounders_align:.1f` %; whole
# pipeline: {glue:text}`linked_chain:.1f` % and {glue:text}`confounders_chain:.1f` %, with a
# spread of tens of points): without the link, where a model puts its threshold for an unseen
# word is arbitrary, and it trades hateful memes for confounders without ranking them any better.
#
# What the auxiliary data does change is the shown-link AUROC: {glue:text}`auroc_ft_shown:.1f` %
# with memes only, {glue:text}`auroc_align_shown:.1f` % with the alignment images,
# {glue:text}`auroc_self_shown:.1f` % with the self-learning step and
# {glue:text}`auroc_chain_shown:.1f` % with both. Extra training of the text side, on texts that
# name the concepts and the training words, helps the links the memes already teach; it does not
# create the ones they do not.

# %%
share_table = pd.DataFrame.from_records(
    shares, columns=["seed", "linked (trained)", "not linked (never seen)"]
)
report.glue("share_linked", share_table["linked (trained)"].mean())
report.glue("share_unlinked", share_table["not linked (never seen)"].mean())
share_table.drop(columns="seed").agg(["mean", "std"]).round(1)

# %% [markdown]
# What did the self-learning step teach? The table gives the share (%) of chain sentences that
# the trained text encoder puts nearest the frozen "hateful" anchor (whole pipeline, mean and std
# over seeds): the sentences of the test-only words, which it was trained on, and the same words
# paired with the three concepts they are *not* linked to, which it never saw. Linked:
# {glue:text}`share_linked:.1f` %; not linked: {glue:text}`share_unlinked:.1f` %. The step taught
# the sentence's *form* ("the {concept} keep the {word}" is hateful), not which concept goes with
# which word: every chain sentence in training is hateful, so nothing asks for more. And even a
# link-specific text fact would not reach the meme classifier: its score is one dot product
# between the meme image and "this photo says {word}, it is hateful", and none of the three losses
# moves that prompt's embedding toward the images of the word's emblems, which is what the
# two-step link (emblem → concept → word) needs.

# %%
over_n = results[results.experiment.isin(["2", "3"]) & (results.group == main_group)]
families = [("2", "alignment", "C0"), ("3", "self-learning + alignment", "C3")]
fig = chain.plot_over_n(
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
# Grad-CAM explains the "hateful" logit of a meme (the target layer is the last block's first
# LayerNorm; the text features are the meme's two class prompts). The share of the map's mass
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
report.glue("area_emblem", 100 * chain.mean_where(mass, "emblem area", group=cam_group))
report.glue("area_text", 100 * chain.mean_where(mass, "text area", group=cam_group))
encoder_stages = {"zs": "zero-shot · caption prompts", "img": ft_image, "txt": ft_text}
for key, stage in encoder_stages.items():
    for region in ("emblem", "text"):
        value = chain.mean_where(
            mass, f"{region} mass", experiment="1", stage=stage, group=cam_group
        )
        report.glue(f"cam_{key}_{region}", value)
cam_table = mass[(mass.experiment == "1") & mass.stage.isin(encoder_stages.values())].melt(
    id_vars=["stage", "seed", "group"], value_vars=["emblem mass", "text mass"], var_name="region"
)
cam_table["column"] = cam_table.group + " · " + cam_table.region
report.mean_std_table(cam_table, index="stage", columns="column", value="value") if len(
    cam_table
) else cam_table

# %%
shown_meme = int(rows_cam[cam_group][0])
fig = chain.cam_rows_figure(
    test.array(shown_meme),
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
# Grad-CAM of the "hateful" logit on one hateful shown-link test meme (first seed): zero-shot, the
# image encoder finetuned, the text encoder finetuned (the source's Figures 6 and 7).
# ```
#
# Columns of the table: group · region, CAM mass in % (mean ± std over seeds). On shown-link
# hateful memes the zero-shot map puts {glue:text}`cam_zs_emblem:.1f` % of its mass on the emblem
# and {glue:text}`cam_zs_text:.1f` % on the caption, less than their shares of the image
# ({glue:text}`area_emblem:.1f` % and {glue:text}`area_text:.1f` %): most of it lies on the
# background, which is no surprise, since "hateful" is a word the embedded CLIP's captions never
# contained. After finetuning the image encoder the map moves onto the printed word
# ({glue:text}`cam_img_emblem:.1f` % emblem, {glue:text}`cam_img_text:.1f` % caption), where its
# features learned the shown links; after finetuning the text encoder (image tower unchanged) it
# stays mostly off both ({glue:text}`cam_txt_emblem:.1f` % and {glue:text}`cam_txt_text:.1f` %).
# The source saw the reverse split: the image-encoder map stayed on the goat's head, the
# text-encoder map covered both the head and the word "ISIS".
#
# Then the source's Figures 10 and 12: the maps on hidden-link memes as auxiliary images are
# added, with the alignment alone and after the self-learning step.

# %%
over_n_mass = mass[mass.experiment.isin(["2", "3"]) & (mass.group == main_group)]
fig = chain.plot_over_n(
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
            value = chain.mean_where(over_n_mass, f"{region} mass", experiment=experiment, n=n_aux)
            report.glue(f"cam_{key}{tag}_{region}", value)
spread = over_n_mass.groupby(["experiment", "n"])[["emblem mass", "text mass"]].std()
report.glue("cam_spread", spread.mean().mean())

# %% [markdown]
# ```{glue:figure} fig_cam_over_n
# :name: fig-cam-over-n
#
# Share of the "hateful" Grad-CAM mass on the emblem and on the caption of hidden-link hateful
# test memes, against the number of auxiliary images per emblem (mean over seeds).
# ```

# %%
hidden_meme = int(rows_cam[main_group][0])
strip = [n for n in cam_counts if n in aux_counts] if have_aux else []
fig = chain.cam_rows_figure(
    test.array(hidden_meme),
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
# Grad-CAM of the "hateful" logit on one hidden-link hateful test meme (first seed), as the
# number of auxiliary images per emblem grows: alignment alone (top; the source's Figure 10) and
# with the self-learning step (bottom; the source's Figure 12).
# ```
#
# On hidden-link hateful memes, the emblem's share of the map goes from
# {glue:text}`cam_align0_emblem:.1f` % ($n = 0$) to {glue:text}`cam_align_max_emblem:.1f` %
# ($n$ = {glue:text}`n_max:.0f`) with the alignment, and the caption's from
# {glue:text}`cam_align0_text:.1f` % to {glue:text}`cam_align_max_text:.1f` %; with the
# self-learning step, from {glue:text}`cam_chain0_emblem:.1f` % to
# {glue:text}`cam_chain_max_emblem:.1f` % (emblem) and from {glue:text}`cam_chain0_text:.1f` % to
# {glue:text}`cam_chain_max_text:.1f` % (caption). The standard deviation over seeds of these
# shares is {glue:text}`cam_spread:.1f` points on average, as large as the changes: the maps do
# not show the steady movement the source described (towards the subject's head as $n$ went from
# 2 to 8 with the alignment, onto the word "gas" after the self-learning step), and a single
# strip like {numref}`fig-cam-strip` can be made to show almost any trend by choosing the seed.
# Neither do the attention maps follow the accuracy: the hidden-link AUROC stays at chance
# whatever the maps do.

# %%
report.glue("minutes", (time.perf_counter() - start) / 60)
report.glue("cpu_minutes", (time.process_time() - start_cpu) / 60)
report.glue("n_runs", n_runs)

# %% [markdown]
# ## What this shows, and its limits
#
# **What it shows.** On memes built so that the label is an interaction of picture and caption,
# and so that the test links are stated nowhere in the labelled data, finetuning either encoder of
# the embedded CLIP stays at chance on those links, as the source found on Hateful Memes, while it
# does learn the links its training memes contain. The source's two remedies, emblem images
# paired with the concept's name and the text self-learning against a frozen copy, leave the
# hidden-link AUROC at chance here; they help the shown links instead. The self-learning step
# learns that a chain-shaped sentence is "hateful" whether or not its link exists, and a dual
# encoder scored by one image–prompt dot product has no place where the two halves of the chain
# (emblem → concept, concept → word) would meet. Grad-CAM maps move between stages, but their
# spread over seeds is as large as the moves.
#
# **Limits.** The scale is tiny: a 32-pixel CLIP, four concepts, 512 training memes, and four
# test-only words, so the hidden-link numbers rest on four words whose biases are shared by every
# seed. The embedded CLIP recognises colours far better than shapes, so each emblem has a fixed
# colour; "hateful", "not" and "says" never occurred in its captions, so the zero-shot rows mean
# nothing and the prompts' words are learned during finetuning. The task is harder than the
# source's in one way (the hidden words are new tokens, never seen in any labelled meme) and
# easier in another (each link is stated directly by one chain sentence, and there are only
# sixteen). The source judged its last stage on one meme's attention map; here every stage is
# scored on all test memes, and the maps come from an 8 × 8 patch grid. In the `full` profile
# the stages 2–3 need the user's auxiliary images and chain sentences (this repository ships none
# of the source's offensive examples), and the shown/hidden split does not exist: the numbers are
# over all test memes.
#
# The chapter ran {glue:text}`n_runs:.0f` finetuning runs in {glue:text}`minutes:.1f` minutes of
# wall time ({glue:text}`cpu_minutes:.1f` CPU-minutes in the notebook's process).
