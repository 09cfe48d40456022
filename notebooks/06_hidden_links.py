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
# the saliency protocol's fields to change (e.g. fewer images for a dry run); {} = the profile's
cam_protocol = {}

# %%
from clipnb.core import report
from clipnb.core.utils import Stopwatch
from clipnb.studies import hidden_links

clock = Stopwatch()
report.set_style()
results = hidden_links.run(
    profile=profile, dataset=dataset, seeds=seeds, n_train=n_train, n_val=n_val, n_test=n_test,
    steps=steps, eval_every=eval_every, pairs_per_step=pairs_per_step, lrs=lrs,
    chain_batch=chain_batch, aux_counts=aux_counts, cam_counts=cam_counts, cam_memes=cam_memes,
    aux_dir=aux_dir, chain_yaml=chain_yaml, max_per_split=max_per_split, cam_protocol=cam_protocol,
)  # fmt: skip
print(results.data_note)
report.glue_numbers(hidden_links.numbers(results))
report.glue_all(hidden_links.verdicts(results))

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
report.glue("fig_memes", hidden_links.memes_figure(results))
hidden_links.links_table(results)

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
hidden_links.probe_table(results)

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
hidden_links.chosen_lr_table(results)

# %%
hidden_links.plain_table(results)

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
hidden_links.stages_table(results)

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
hidden_links.share_table(results)

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
report.glue("fig_aux_curve", hidden_links.aux_curve_figure(results))

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
hidden_links.cam_table(results)

# %%
report.glue("fig_cam_encoders", hidden_links.cam_encoders_figure(results))

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
report.glue("fig_cam_over_n", hidden_links.cam_over_n_figure(results))

# %% [markdown]
# ```{glue:figure} fig_cam_over_n
# :name: fig-cam-over-n
#
# Share of the "hateful" CAM mass ({glue:md}`cam_setting`) on the emblem and on the caption of
# hidden-link hateful test memes, against the number of auxiliary images per emblem (mean over
# seeds). A uniform map puts {glue:text}`area_emblem_hidden:.1f` % on the emblem.
# ```

# %%
report.glue("fig_cam_strip", hidden_links.cam_strip_figure(results))

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
report.glue_numbers(hidden_links.minutes(clock))

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
