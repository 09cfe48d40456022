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
# # What frozen features contain
#
# Real CLIP struggles with counting objects and judging distances between them. One explanation
# is that its image features no longer hold *where* things are and *what they look like*. The
# source report tested this by training two decoders on the frozen features of CLIP's image
# tower, taken before the final attention pool: a VQ-VAE decoder that rebuilds the image, and a
# segmentation decoder that predicts object masks.
#
# **Question.** How much spatial and colour information survives in CLIP's image features before
# pooling, and how much of it comes from pretraining rather than from the tower's architecture?
#
# We repeat both experiments on the embedded CLIP and add the control the source lacked: the same
# decoders on a randomly initialised copy of the same image tower.

# %% tags=["parameters"]
profile = "embedded"
vq_dataset = "world-shape-photo"
seg_dataset = "world-shape-photo"
ood_dataset = "world-shape-sketch"
dataset_options = {"per_class": [64, 16, 32]}
seeds = [0, 1, 2]
recon_size = 32
vq_steps = 500
seg_steps = 500
eval_every = 50
batch_size = 16
vq_lr = 0.002
seg_lr = 0.005
n_codes = 64
code_dim = 32
decay = 0.9
hidden = 32
unet_base = 8
n_show = 8

# %%
import matplotlib.pyplot as plt

from clipnb.core import report
from clipnb.studies import feature_decoding

report.set_style()

# %% [markdown]
# ## Method
#
# **Spatial features.** For a ViT tower (the embedded CLIP and the `full` profile's ViT-B/32) we
# take the patch tokens leaving the last transformer block, before `ln_post`, pooling and the
# projection, and reshape them to the patch grid: a map $z(x) \in \mathbb{R}^{C \times h \times
# w}$. For a ResNet tower (the source's RN50) it is the output of the last residual stage with the
# attention pool removed. The tower is frozen and runs once per image; its features are cached.
#
# **VQ-VAE.** A $1\times1$ convolution maps each feature vector to $d$ dimensions, $z_e$, which is
# replaced by its nearest codebook vector, $z_q = e_k$ with $k = \arg\min_j \lVert z_e - e_j
# \rVert$; a transposed-convolution decoder $D$ rebuilds the image. With the stop-gradient
# $\mathrm{sg}$ and $\beta = 0.25$, the loss is
#
# $$
# \mathcal{L} = \lVert x - D(z_q) \rVert_2^2 + \beta \,\lVert z_e - \mathrm{sg}(e_k) \rVert_2^2 ,
# $$
#
# and the codebook follows exponential moving averages of the vectors assigned to each code
# (decay $\gamma$): $N_k \leftarrow \gamma N_k + (1-\gamma) n_k$, $m_k \leftarrow \gamma m_k +
# (1-\gamma) \sum_{i: k_i = k} z_{e,i}$, $e_k = m_k / N_k$. Three encoders feed the same
# quantiser and decoder: the frozen CLIP tower, the frozen random tower, and a small convolutional
# encoder trained with the decoder (the ordinary VQ-VAE, the source's reference). All three
# quantise to the same $h \times w$ grid of codes, so they pass the decoder the same number of
# bits; only what the codes can say differs. Reconstruction quality is the peak signal-to-noise
# ratio, $\mathrm{PSNR} = 10 \log_{10}(1/\mathrm{MSE})$ dB on $[0, 1]$ pixels.
#
# **Segmentation.** A decoder of UNet-style blocks (two conv–BN–ReLU layers, then $\times 2$
# upsampling; no skip connections, since the encoder is frozen) maps the frozen features to
# per-pixel class logits, trained with cross-entropy, on the CLIP and on the random tower. The
# reference is a small UNet with skip connections trained from scratch on the pixels. We report
# the mean intersection-over-union over classes, $\mathrm{mIoU} = \frac{1}{K} \sum_k
# \frac{|P_k \cap G_k|}{|P_k \cup G_k|}$. In `embedded`, the classes are the background and the
# eight shapes of the generated world, from its exact object masks; in `full`, the background /
# pet / border trimaps of Oxford-IIIT Pets.
#
# **Protocol.** Every decoder trains with Adam for a fixed number of steps; the validation loss is
# measured every few steps and the step with the lowest one is kept (chosen on validation only).
# The test split is scored once, for the table. Each configuration runs for every seed (decoder
# initialisation and batch order change; the towers and the data do not).


# %%
data = feature_decoding.prepare(
    profile=profile,
    vq_dataset=vq_dataset,
    seg_dataset=seg_dataset,
    ood_dataset=ood_dataset,
    dataset_options=dataset_options,
    recon_size=recon_size,
    seed=seeds[0],
)
feature_decoding.data_table(data.summary)

# %% [markdown]
# Each image becomes a {glue:text}`grid_h:.0f` × {glue:text}`grid_h:.0f` grid of
# {glue:text}`feat_channels:.0f`-dimensional feature vectors. The VQ-VAEs train on
# {glue:text}`n_vq_train:.0f` images and the segmenters on {glue:text}`n_seg_train:.0f`.
#
# ## Rebuilding the image from the features

# %%
vq = feature_decoding.run_vqvae(
    data,
    seeds=seeds,
    steps=vq_steps,
    lr=vq_lr,
    batch_size=batch_size,
    eval_every=eval_every,
    n_codes=n_codes,
    code_dim=code_dim,
    decay=decay,
    hidden=hidden,
    n_show=n_show,
)
feature_decoding.vq_table(vq)

# %%
fig = feature_decoding.reconstructions_figure(vq)
report.glue("fig_reconstructions", fig)
plt.close(fig)
fig = feature_decoding.random_codes_figure(vq)
report.glue("fig_random_codes", fig)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_reconstructions
# :name: fig-decoding-reconstructions
#
# Held-out test images (top row) and their reconstructions by the three VQ-VAEs (seed
# {glue:text}`first_seed:.0f`): from the frozen CLIP features, from the frozen random tower, and
# from an encoder trained with the decoder.
# ```
#
# ```{glue:figure} fig_random_codes
# :name: fig-decoding-random-codes
#
# The same decoders fed uniformly random code maps instead of encoded images.
# ```
#
# On held-out images, the decoder reading frozen CLIP features reaches
# {glue:text}`vq_psnr_clip:.1f` dB, against {glue:text}`vq_psnr_own:.1f` dB for the VQ-VAE whose
# encoder is trained for the job and {glue:text}`vq_psnr_random:.1f` dB for the random tower
# (ranked by mean test PSNR: {glue:md}`vq_psnr_ranking`). The final training loss is
# {glue:text}`vq_train_clip:.4f` from CLIP's features and {glue:text}`vq_train_own:.4f` with a
# trained encoder, a ratio of {glue:text}`vq_train_ratio:.1f`: {glue:md}`vq_ratio_meaning`. The
# source's numbers (ResNet-50 CLIP, its own loss scale, so only the ratio compares): a last-epoch
# training loss of 1.7655 from CLIP's features against 0.1265 for the example VQ-VAE, a ratio of
# about 14, with reconstructions that were "quite blur" but kept "the rough shapes and colors of
# objects". {glue:md}`vq_ratio_vs_source`.
#
# The source found that random code maps decode to textures rather than objects;
# {numref}`fig-decoding-random-codes` repeats that test for each encoder. Where the decoded maps
# show no objects, the reason is that a decoder this small models the codes of real images, not a
# prior over code maps: a random map is not an image it learned to draw.

# %% [markdown]
# ## Segmenting from the features

# %%
seg = feature_decoding.run_segmentation(
    data,
    seeds=seeds,
    steps=seg_steps,
    lr=seg_lr,
    batch_size=batch_size,
    eval_every=eval_every,
    hidden=hidden,
    unet_base=unet_base,
    n_show=n_show,
)
feature_decoding.seg_table(seg)

# %%
results = feature_decoding.DecodingResults(data.summary, vq, seg)
report.glue_numbers(feature_decoding.numbers(results))
report.glue_all(feature_decoding.verdicts(results))
fig = feature_decoding.val_curves_figure(results)
report.glue("fig_val_curves", fig)
plt.close(fig)
fig = feature_decoding.masks_figure(seg)
report.glue("fig_masks", fig)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_val_curves
# :name: fig-decoding-val-curves
#
# Validation loss during training, mean over seeds (band: ± one standard deviation). Left: the
# three VQ-VAEs; right: the segmentation decoders on frozen features and the UNet trained from
# scratch.
# ```
#
# ```{glue:figure} fig_masks
# :name: fig-decoding-masks
#
# Held-out test images, their exact masks (one colour per class, background included) and the
# masks predicted by each model (seed {glue:text}`first_seed:.0f`).
# ```
#
# Over {glue:text}`n_seg_classes:.0f` classes, the decoder on frozen CLIP features reaches a test
# mIoU of {glue:text}`seg_miou_clip:.1f` %, the same decoder on the random tower
# {glue:text}`seg_miou_random:.1f` %, and the UNet trained from scratch
# {glue:text}`seg_miou_unet:.1f` %; their best validation losses are
# {glue:text}`seg_val_clip:.3f`, {glue:text}`seg_val_random:.3f` and
# {glue:text}`seg_val_unet:.3f` (ranked by mean test mIoU: {glue:md}`seg_miou_ranking`). The
# source reported no mIoU; it found that the CLIP-based masks were "fairly good" and that the
# final validation loss of its CLIP-based model was "comparable to that of the original UNet11
# model", after 10 epochs. Here the best validation loss of the CLIP-based decoder is
# {glue:md}`seg_val_vs_unet` the UNet's. {glue:md}`seg_ood_sentence`
#
# ## What this shows, and its limits
#
# The random tower is the yardstick the source lacked. Its features are a fixed random function
# of the pixels, carried forward by the patch embedding and residual stream without any training;
# a decoder trained on them reaches {glue:text}`vq_psnr_random:.1f` dB and
# {glue:text}`seg_miou_random:.1f` % mIoU, which is what the architecture alone gives. What
# pretraining adds is the difference between the CLIP rows and the random-tower rows of the
# tables. For the pixel-level question (rebuild the image) that difference is the PSNR gap,
# {glue:md}`vq_pretrain_gap`. For the semantic one (which shape is where) it is the mIoU gap,
# {glue:md}`seg_pretrain_gap`; the two questions can part ways, because naming a shape needs more
# than its colour and layout.
#
# **Limits.** The embedded CLIP is tiny and its world is simple: 32-pixel images of one flat
# object on a textured background, a job a trained encoder or a UNet with skip connections can in
# principle learn well; whether they do within this training budget is what their rows show. The
# decoders are small and train for a few hundred steps on a few hundred images, so absolute PSNR
# and mIoU depend on that budget: {glue:md}`last_step_share`. The comparison between rows, with
# the same decoder, steps and seeds, is what the chapter reads. The features are the last block's
# tokens before `ln_post`; CLIP's pooled embedding, which zero-shot classification uses, may keep
# less (not measured here). The source's numbers come from a ResNet-50 CLIP at 224 pixels on other
# data and another loss scale: only their direction compares with ours.
