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
import pandas as pd
import torch
import torch.nn.functional as F

import clipnb
from clipnb.core import report
from clipnb.core.features import image_tensors
from clipnb.methods import pretrain
from clipnb.methods.backbones import FULL_MODEL, load_model
from clipnb.methods.decoders import VQVAE, ConvEncoder, SegmentationDecoder, UNet, vqvae_loss
from clipnb.studies.feature_decoding import (
    fit_on_validation,
    label_map_grid,
    pixel_tensors,
    plot_curves,
    segmentation_scores,
    segmentation_targets,
    spatial_feature_cache,
    to_uint8_images,
    vqvae_scores,
)

clipnb.seed_everything(seeds[0])
report.set_style()
device = "cuda" if torch.cuda.is_available() else "cpu"
bundle = load_model(profile)
control = (
    pretrain.random_tower(profile)
    if profile in pretrain.PRETRAIN_CONFIGS
    else clipnb.create_model(FULL_MODEL[0], pretrained=None)
)
towers = {"CLIP": bundle.model.to(device), "random tower": control.model.to(device)}
train_args = {"batch_size": batch_size, "eval_every": eval_every, "progress": True}

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
datasets = {
    name: clipnb.load_dataset(name, **dataset_options)
    for name in dict.fromkeys([vq_dataset, seg_dataset, ood_dataset])
    if name
}
vq_data, seg_data = datasets[vq_dataset], datasets[seg_dataset]
splits = ("train", "val", "test")

# Frozen features, once per tower and image set (cached on disk).
vq_feats = {
    t: {s: spatial_feature_cache(b, vq_data.split(s)) for s in splits}
    for t, b in (("CLIP", bundle), ("random tower", control))
}
vq_pixels = {s: pixel_tensors(vq_data.split(s), recon_size) for s in splits}
grid = tuple(vq_feats["CLIP"]["train"].shape[-2:])
channels = vq_feats["CLIP"]["train"].shape[1]

seg_sets = {s: seg_data.split(s) for s in splits}
if ood_dataset:
    seg_sets["ood"] = datasets[ood_dataset].test
seg_feats = {
    t: {s: spatial_feature_cache(b, split) for s, split in seg_sets.items()}
    for t, b in (("CLIP", bundle), ("random tower", control))
}
seg_pixels = {s: image_tensors(bundle, split) for s, split in seg_sets.items()}
seg_targets = {}
for s, split in seg_sets.items():
    seg_targets[s], seg_classes = segmentation_targets(bundle, split)
n_classes = len(seg_classes)

report.glue("n_vq_train", len(vq_data.train))
report.glue("n_seg_train", len(seg_data.train))
report.glue("grid_h", grid[0])
report.glue("feat_channels", channels)
pd.DataFrame(
    {
        "dataset": [vq_dataset, seg_dataset] + ([ood_dataset] if ood_dataset else []),
        "used for": ["VQ-VAE", "segmentation"]
        + (["segmentation, OOD test"] if ood_dataset else []),
        "train / val / test images": [
            f"{len(d.train)} / {len(d.val)} / {len(d.test)}" for d in (vq_data, seg_data)
        ]
        + ([f"– / – / {len(seg_sets['ood'])}"] if ood_dataset else []),
    }
)

# %% [markdown]
# Each image becomes a {glue:text}`grid_h:.0f` × {glue:text}`grid_h:.0f` grid of
# {glue:text}`feat_channels:.0f`-dimensional feature vectors. The VQ-VAEs train on
# {glue:text}`n_vq_train:.0f` images and the segmenters on {glue:text}`n_seg_train:.0f`.
#
# ## Rebuilding the image from the features

# %%
vq_inputs = {
    "CLIP (frozen)": vq_feats["CLIP"],
    "random tower (frozen)": vq_feats["random tower"],
    "own encoder (trained)": vq_pixels,
}


def make_vqvae(name: str) -> VQVAE:
    if name == "own encoder (trained)":
        encoder = ConvEncoder(hidden, recon_size, grid, hidden=hidden)
        return VQVAE(
            hidden, grid, recon_size, n_codes, code_dim, encoder=encoder, hidden=hidden, decay=decay
        )
    return VQVAE(channels, grid, recon_size, n_codes, code_dim, hidden=hidden, decay=decay)


vq_records, vq_curves, vq_models = [], [], {}
for seed in seeds:
    for name, inputs in vq_inputs.items():
        clipnb.seed_everything(seed)
        model = make_vqvae(name).to(device)
        train = (inputs["train"], vq_pixels["train"])
        val = (inputs["val"], vq_pixels["val"])
        hist = fit_on_validation(
            model, train, val, vqvae_loss, vq_steps, lr=vq_lr, seed=seed, desc=f"VQ {name} {seed}",
            **train_args,
        )  # fmt: skip
        scores = {s: vqvae_scores(model, inputs[s], vq_pixels[s]) for s in ("train", "test")}
        for step, loss in zip(hist["val_step"], hist["val_loss"], strict=True):
            vq_curves.append({"encoder": name, "seed": seed, "step": step, "val loss": loss})
        for metric, value in (
            ("train loss ×100", 100 * scores["train"]["loss"]),
            ("test loss ×100", 100 * scores["test"]["loss"]),
            ("test PSNR (dB)", scores["test"]["psnr"]),
            ("codes used (perplexity)", scores["test"]["perplexity"]),
            ("chosen step", hist["best_step"]),
        ):
            vq_records.append({"encoder": name, "seed": seed, "metric": metric, "value": value})
        if seed == seeds[0]:
            vq_models[name] = model

report.mean_std_table(vq_records, index="encoder", columns="metric", value="value", digits=2)

# %%
vq_mean = report.mean_table(vq_records, index="encoder", columns="metric", value="value")
report.glue("vq_psnr_clip", vq_mean.loc["CLIP (frozen)", "test PSNR (dB)"])
report.glue("vq_psnr_random", vq_mean.loc["random tower (frozen)", "test PSNR (dB)"])
report.glue("vq_psnr_own", vq_mean.loc["own encoder (trained)", "test PSNR (dB)"])
report.glue("vq_train_clip", vq_mean.loc["CLIP (frozen)", "train loss ×100"] / 100)
report.glue("vq_train_random", vq_mean.loc["random tower (frozen)", "train loss ×100"] / 100)
report.glue("vq_train_own", vq_mean.loc["own encoder (trained)", "train loss ×100"] / 100)
vq_ratio = (
    vq_mean.loc["CLIP (frozen)", "train loss ×100"]
    / vq_mean.loc["own encoder (trained)", "train loss ×100"]
)
report.glue("vq_train_ratio", vq_ratio)


def ranking(means: pd.Series) -> str:
    """The rows of ``means``, highest first, as a phrase."""
    order = list(means.sort_values(ascending=False).index)
    return ", then ".join(order)


def gap_words(records: list[dict], key: str, metric: str, a: str, b: str, unit: str) -> str:
    """How row ``a`` differs from row ``b`` on ``metric``, against the spread over seeds."""
    df = pd.DataFrame(records)
    values = df[df["metric"] == metric].groupby(key)["value"]
    gap = values.mean()[a] - values.mean()[b]
    spread = max(values.std(ddof=0).fillna(0)[[a, b]])
    if values.count()[[a, b]].min() < 2:
        return f"{gap:+.2f} {unit} (one seed, so no spread over seeds to compare it with)"
    if abs(gap) <= spread:
        return f"{gap:+.2f} {unit}, within the spread over seeds (± {spread:.2f})"
    direction = "a gain" if gap > 0 else "a loss"
    return f"{gap:+.2f} {unit}, {direction} larger than the spread over seeds (± {spread:.2f})"


report.glue_words("vq_psnr_ranking", ranking(vq_mean["test PSNR (dB)"]))
report.glue_words(
    "vq_ratio_meaning",
    "CLIP's features fit the training images less closely than the trained encoder"
    if vq_ratio > 1
    else "CLIP's features fit the training images at least as closely as the trained encoder",
)
report.glue_words(
    "vq_ratio_vs_source",
    "Our ratio is also above 1, the source's direction"
    if vq_ratio > 1
    else "Our ratio is not above 1: here the source's direction does not reproduce",
)
report.glue_words(
    "vq_pretrain_gap",
    gap_words(
        vq_records, "encoder", "test PSNR (dB)", "CLIP (frozen)", "random tower (frozen)", "dB"
    ),
)

# %%
show = slice(0, n_show)
rows = [("original", vq_pixels["test"][show])]
with torch.no_grad():
    for name, model in vq_models.items():
        rows.append((name, model(vq_inputs[name]["test"][show].to(device))[0]))
cells = [im for _, images in rows for im in to_uint8_images(images)]
titles = [name if i == 0 else "" for name, images in rows for i in range(len(images))]
fig = report.image_grid(cells, titles, ncols=n_show, size=1.1, title_size=7)
report.glue("fig_reconstructions", fig)
plt.close(fig)

codes = torch.randint(n_codes, (n_show, *grid), generator=torch.Generator().manual_seed(seeds[0]))
with torch.no_grad():
    random_rows = [(name, m.decode_codes(codes.to(device))) for name, m in vq_models.items()]
cells = [im for _, images in random_rows for im in to_uint8_images(images)]
titles = [name if i == 0 else "" for name, images in random_rows for i in range(len(images))]
fig = report.image_grid(cells, titles, ncols=n_show, size=1.1, title_size=7)
report.glue("fig_random_codes", fig)
plt.close(fig)
report.glue("first_seed", seeds[0])

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
seg_inputs = {
    "CLIP (frozen) + decoder": seg_feats["CLIP"],
    "random tower (frozen) + decoder": seg_feats["random tower"],
    "UNet from scratch": seg_pixels,
}
out_size = tuple(seg_targets["train"].shape[-2:])


def make_segmenter(name: str) -> torch.nn.Module:
    if name == "UNet from scratch":
        return UNet(n_classes, base=unet_base)
    return SegmentationDecoder(channels, n_classes, grid, out_size, hidden=hidden)


seg_records, seg_curves, seg_models = [], [], {}
for seed in seeds:
    for name, inputs in seg_inputs.items():
        clipnb.seed_everything(seed)
        model = make_segmenter(name).to(device)
        train = (inputs["train"], seg_targets["train"])
        val = (inputs["val"], seg_targets["val"])
        hist = fit_on_validation(
            model, train, val, F.cross_entropy, seg_steps, lr=seg_lr, seed=seed,
            desc=f"seg {name} {seed}", **train_args,
        )  # fmt: skip
        for step, loss in zip(hist["val_step"], hist["val_loss"], strict=True):
            seg_curves.append({"model": name, "seed": seed, "step": step, "val loss": loss})
        test = segmentation_scores(model, inputs["test"], seg_targets["test"], n_classes)
        # Without an OOD set (`ood_dataset = ""`) the OOD column is left out, not filled with NaN.
        ood = (
            [("OOD test mIoU %", segmentation_scores(model, inputs["ood"], seg_targets["ood"], n_classes)["miou"])]
            if ood_dataset
            else []
        )  # fmt: skip
        for metric, value in (
            ("test mIoU %", test["miou"]),
            ("test pixel acc. %", test["pixel_acc"]),
            *ood,
            ("best val. loss ×100", 100 * hist["best_val_loss"]),
            ("chosen step", hist["best_step"]),
        ):
            seg_records.append({"model": name, "seed": seed, "metric": metric, "value": value})
        if seed == seeds[0]:
            seg_models[name] = model

report.mean_std_table(seg_records, index="model", columns="metric", value="value", digits=1)

# %%
seg_mean = report.mean_table(seg_records, index="model", columns="metric", value="value")
for key, name in (
    ("clip", "CLIP (frozen) + decoder"),
    ("random", "random tower (frozen) + decoder"),
    ("unet", "UNet from scratch"),
):
    report.glue(f"seg_miou_{key}", seg_mean.loc[name, "test mIoU %"])
    report.glue(
        f"seg_ood_{key}", seg_mean.loc[name, "OOD test mIoU %"] if ood_dataset else float("nan")
    )
    report.glue(f"seg_val_{key}", seg_mean.loc[name, "best val. loss ×100"] / 100)
report.glue("n_seg_classes", n_classes)
report.glue_words("seg_miou_ranking", ranking(seg_mean["test mIoU %"]))
report.glue_words(
    "seg_val_vs_unet",
    "lower than"
    if seg_mean.loc["CLIP (frozen) + decoder", "best val. loss ×100"]
    < seg_mean.loc["UNet from scratch", "best val. loss ×100"]
    else "not lower than",
)
seg_gap = {
    metric: seg_mean.loc["CLIP (frozen) + decoder", metric]
    - seg_mean.loc["random tower (frozen) + decoder", metric]
    for metric in seg_mean.columns
    if "mIoU" in metric
}
report.glue("seg_gap_test", seg_gap["test mIoU %"])
report.glue("seg_gap_ood", seg_gap.get("OOD test mIoU %", float("nan")))
if ood_dataset:
    ood_miou = seg_mean["OOD test mIoU %"]
    report.glue_words(
        "seg_ood_sentence",
        f"On the test images of `{ood_dataset}` (the same classes, out of distribution for the"
        f" tower), the models trained on `{seg_dataset}` reach"
        f" {ood_miou['CLIP (frozen) + decoder']:.1f} % (CLIP),"
        f" {ood_miou['random tower (frozen) + decoder']:.1f} % (random tower) and"
        f" {ood_miou['UNet from scratch']:.1f} % (UNet) (ranked: {ranking(ood_miou)}). The CLIP"
        f" decoder's mIoU minus the random tower's is {seg_gap['test mIoU %']:+.1f} points on"
        f" `{seg_dataset}` and {seg_gap['OOD test mIoU %']:+.1f} points on `{ood_dataset}`.",
    )
else:
    report.glue_words(
        "seg_ood_sentence",
        "This run sets no out-of-distribution segmentation set (`ood_dataset` is empty), so only"
        f" the test split of `{seg_dataset}` is scored; there the CLIP decoder's mIoU minus the"
        f" random tower's is {seg_gap['test mIoU %']:+.1f} points.",
    )
report.glue_words(
    "seg_pretrain_gap",
    gap_words(
        seg_records,
        "model",
        "test mIoU %",
        "CLIP (frozen) + decoder",
        "random tower (frozen) + decoder",
        "points",
    ),
)
# How many runs kept their last step (validation loss still falling when training stopped).
last = [r["value"] >= vq_steps for r in vq_records if r["metric"] == "chosen step"]
last += [r["value"] >= seg_steps for r in seg_records if r["metric"] == "chosen step"]
report.glue_words(
    "last_step_share",
    f"the lowest validation loss came at the last step in {sum(last)} of {len(last)} runs"
    + (", so longer training would likely lower it further" if 2 * sum(last) > len(last) else ""),
)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for ax, curves, key, title in (
    (axes[0], vq_curves, "encoder", "VQ-VAE: validation loss"),
    (axes[1], seg_curves, "model", "Segmentation: validation cross-entropy"),
):
    plot_curves(ax, curves, key)
    ax.set(xlabel="training step", ylabel="validation loss", title=title, yscale="log")
    ax.legend(fontsize=8)
fig.tight_layout()
report.glue("fig_val_curves", fig)
plt.close(fig)

maps = {"ground truth": seg_targets["test"][show]}
with torch.no_grad():
    for name, model in seg_models.items():
        maps[name] = model(seg_inputs[name]["test"][show].to(device)).argmax(1)
shown = [seg_sets["test"].array(i) for i in range(min(n_show, len(seg_sets["test"])))]
fig = label_map_grid(shown, maps, seg_classes)
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
