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
# # Finetuning each part of CLIP
#
# Section 2 of the source report finetunes one part of CLIP at a time (the text encoder, the image
# encoder, the text projection or the image projection) on a few labelled images per class, and
# reads the result against how far each dataset is from CLIP's pretraining data. Its finding: on
# MNIST the projections barely move while either encoder gains 30 to 50 points; on Flowers102 and
# Animals90 the projections are enough, and even ahead. It then uses Grad-CAM to argue that the
# model's attention moves onto the object as the shot count grows.
#
# **Question.** On the embedded CLIP, which part has to move to adapt to an out-of-distribution
# dataset, and does finetuning move the Grad-CAM attention onto the object, measurably?

# %% tags=["parameters"]
profile = "embedded"
datasets = ["digits", "world-shape-sketch", "world-shape-photo"]
shots = [[1, 5, 10, 15, 20, 25, 30, 40, 60], [1, 2, 4, 6, 8], [1, 5, 10, 15, 20, 25]]
selection_shots = [10, 4, 10]
world_per_class = [32, 32, 48]
max_per_split = 0
seeds = [0, 1, 2]
selection_seeds = [0]
encoder_lrs = [1e-05, 0.0001, 0.001]
projection_lrs = [0.0001, 0.001, 0.01]
step_grid = [25, 50]
batch_size = 8
cam_images = 32
figure_images = 2
wrong_target = ["five", "one"]
# the saliency protocol's fields to change (e.g. fewer images for a dry run); {} = the profile's
cam_protocol = {}

# %%
import time

import matplotlib.pyplot as plt

from clipnb.core import report
from clipnb.studies import finetune_parts

started, cpu_started = time.perf_counter(), time.process_time()
report.set_style()
setup = finetune_parts.prepare(
    profile,
    datasets,
    shots,
    selection_shots,
    world_per_class,
    max_per_split,
    seeds[0],
    encoder_lrs,
    projection_lrs,
    cam_protocol=cam_protocol,
)

# %% [markdown]
# ## Three datasets at three distances
#
# The source used MNIST (far from CLIP's internet images), Flowers102 and Animals90. The embedded
# profile plays the same three roles with data the embedded CLIP never saw or saw plenty of:
# scikit-learn's real handwritten digits (the world only has printed digits), the world's shapes
# drawn in the `sketch` style that pretraining held out, and the world's shapes in the `photo`
# style it was pretrained on. Each keeps the source's shot counts. The test split is fixed; seeds
# only change which training images are drawn.

# %%
finetune_parts.overview_table(setup)

# %% [markdown]
# ## The method
#
# The model being finetuned is CLIP's own zero-shot classifier. For an image $x$ and the class
# prompts $t_c$ = "a photo of a {class}.", with image tower $g$, text tower $h$, projections
# $P_I, P_T$ and CLIP's logit scale $s$, the logits and the loss are
#
# $$
# z_c(x) = s \, \frac{P_I\, g(x)}{\lVert P_I\, g(x) \rVert} \cdot
#   \frac{P_T\, h(t_c)}{\lVert P_T\, h(t_c) \rVert}, \qquad
# \mathcal{L} = -\frac{1}{B} \sum_{i=1}^{B} \log \frac{e^{z_{y_i}(x_i)}}{\sum_{c} e^{z_c(x_i)}} .
# $$
#
# One of $g$, $h$, $P_I$, $P_T$ is trained with Adam (batches of a fixed size drawn from the
# $k$-shot training set), everything else frozen, on a copy of the pretrained model:
# `clipnb.methods.finetune` checks that only the chosen part's parameters change. What is frozen is
# computed once: a text part trains against cached image embeddings, the image projection against
# cached pooled features, and a frozen text side needs its class embeddings once.
#
# **Selection.** The learning rate and the number of steps of each part are chosen on the
# validation split, per dataset, at one representative shot count, then fixed for every shot count
# and seed: a grid of learning rates (encoders and projections get grids one decade apart, as
# projections are single matrices) times a few step counts; one run per learning rate is scored on
# the validation split at each step count of the grid. The test split is read once per reported
# number.

# %%
selection = finetune_parts.run_selection(
    setup, selection_shots, step_grid, selection_seeds, batch_size
)
finetune_parts.chosen_table(setup, selection)

# %% [markdown]
# Above, the chosen learning rate and step count per part and dataset (batches of
# {glue:text}`batch_size:.0f` images, training draws of seed {glue:text}`selection_seed:.0f`).
# Below, the whole grid: validation accuracy (%) of every candidate, rows = learning rate and
# steps, one column per dataset and part.

# %%
finetune_parts.selection_grid_table(setup, selection)

# %% [markdown]
# ## The sweep
#
# Every part is finetuned on every shot count with every seed and scored on the test split. Each
# finetuned model also goes through Grad-CAM on fixed test images (next section); only the
# numbers and a few maps are kept.

# %%
results = finetune_parts.run_sweep(
    setup, selection, seeds, batch_size, cam_images, figure_images, wrong_target
)
report.glue_numbers(finetune_parts.numbers(results))
report.glue_all(finetune_parts.verdicts(results))

# %% [markdown]
# ## Results
#
# Test accuracy (%, mean ± std over {glue:text}`n_seeds:.0f` seeds); the 0 column is the
# pretrained model's zero-shot accuracy.

# %%
finetune_parts.accuracy_table(results, "mnist")

# %% [markdown]
# *Above: the MNIST-like set (handwritten digits, the source's Table 2). Below: the Flowers-like
# set (held-out sketch style, Table 3), then the animals-like set (in-distribution photos,
# Table 4).*

# %%
finetune_parts.accuracy_table(results, "flowers")

# %%
finetune_parts.accuracy_table(results, "animals")

# %%
fig = finetune_parts.accuracy_figure(results)
report.glue("fig_accuracy", fig)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_accuracy
# :name: fig-finetune-accuracy
#
# Test accuracy against shots per class, one line per finetuned part (mean over seeds, band ±1
# std; 0 shots is zero-shot). Dotted: chance.
# ```
#
# ### Against the source
#
# On the handwritten digits (zero-shot {glue:text}`zs_mnist:.1f` %), finetuning the image encoder
# on {glue:text}`max_shots_mnist:.0f` images per class reaches
# {glue:text}`max_mnist_image_encoder:.1f` % and the text encoder
# {glue:text}`max_mnist_text_encoder:.1f` %, while the text projection reaches
# {glue:text}`max_mnist_text_projection:.1f` % and the image projection
# {glue:text}`max_mnist_image_projection:.1f` %. The source's Table 2 (real CLIP on MNIST, 1 to 60
# shots) has the text encoder going from 57.8 % to 92.5 % and the image encoder from 62.4 % to
# 89.6 %, while the text projection only goes from 35.9 % to 40.4 % and the image projection from
# 37.5 % to 40.8 %, barely above its 32.6 % zero-shot. Here, at the most shots,
# {glue:md}`order_mnist` (where the encoders lead).
#
# On the in-distribution photos (zero-shot {glue:text}`zs_animals:.1f` %), at
# {glue:text}`max_shots_animals:.0f` shots the text projection reaches
# {glue:text}`max_animals_text_projection:.1f` %, the image projection
# {glue:text}`max_animals_image_projection:.1f` %, the text encoder
# {glue:text}`max_animals_text_encoder:.1f` % and the image encoder
# {glue:text}`max_animals_image_encoder:.1f` %. The source's Table 4 (Animals90) has both
# projections at 93.6–93.8 % from one shot on, ahead of the text encoder (61.0 % to 85.0 %) and
# the image encoder (56.8 % to 79.7 %). Here, at the most shots, {glue:md}`order_animals`
# (where the projections lead). On the held-out sketch style (zero-shot
# {glue:text}`zs_flowers:.1f` %), at {glue:text}`max_shots_flowers:.0f` shots: text encoder
# {glue:text}`max_flowers_text_encoder:.1f` %, image encoder
# {glue:text}`max_flowers_image_encoder:.1f` %, text projection
# {glue:text}`max_flowers_text_projection:.1f` %, image projection
# {glue:text}`max_flowers_image_projection:.1f` %; the source's Table 3 (Flowers102) has the
# projections flat at 63.0–63.3 % and the encoders between 53.0 % and 63.0 %. Here, at the most
# shots, {glue:md}`order_flowers` (where the projections lead or tie).
#
# ## Where the CAM says the model looks
#
# A class activation map explains the score $y^c$ of one class, here the zero-shot logit of the
# class's text embedding, through the activations $A^k$ of one block of the image tower (patch
# tokens laid back on the patch grid). Grad-CAM, for instance, weighs each channel by its mean
# gradient,
#
# $$
# \alpha^c_k = \frac{1}{Z} \sum_{i,j} \frac{\partial y^c}{\partial A^k_{ij}}, \qquad
# L^c = \operatorname{ReLU}\Big(\sum_k \alpha^c_k A^k\Big),
# $$
#
# upsampled to the image and scaled to $[0, 1]$ (pytorch-grad-cam, through `clipnb.methods.gradcam`).
# Which method and block to trust was decided once, on validation masks, in the embedded CLIP
# chapter: this chapter uses {glue:md}`cam_setting`. {glue:md}`cam_reading` A finetuned text part
# changes the map only through the class embedding it explains; an image part changes the tower
# itself. The grids below show fixed test images (rows, per part) for every shot count of the
# sweep (first seed).

# %%
for name, fig in finetune_parts.cam_figures(results).items():
    report.glue(name, fig)
    plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_cam_mnist
# :name: fig-cam-mnist
#
# CAMs ({glue:md}`cam_setting`) for the true class on handwritten digits, per finetuned part
# (rows) and shots per class (columns; 0 = the pretrained model). Red: high. The maps shown put
# {glue:text}`fig_cam_mnist_mass:.1f` % of their mass on the ink, which covers
# {glue:text}`fig_cam_mnist_area:.1f` % of these images (what a uniform map scores).
# ```
#
# ```{glue:figure} fig_cam_flowers
# :name: fig-cam-flowers
#
# The same for the held-out sketch style (the Flowers-like set): mass in the object mask
# {glue:text}`fig_cam_flowers_mass:.1f` % against a uniform map's
# {glue:text}`fig_cam_flowers_area:.1f` %.
# ```
#
# ```{glue:figure} fig_cam_animals
# :name: fig-cam-animals
#
# The same for the in-distribution photos (the animals-like set): mass in the object mask
# {glue:text}`fig_cam_animals_mass:.1f` % against a uniform map's
# {glue:text}`fig_cam_animals_area:.1f` %.
# ```
#
# ### A forced wrong target
#
# The source made the model explain "one" for an image of a "five" and found the attention
# "distracted and diffused" (its Figure 5). Here is the map for the true class beside the map for
# the forced class, for the pretrained model and the two encoders finetuned on the most shots.

# %%
for name, fig in finetune_parts.wrong_target_figures(results).items():
    report.glue(name, fig)
    plt.close(fig)
finetune_parts.wrong_target_table(results)

# %% [markdown]
# ```{glue:figure} fig_wrong_target
# :name: fig-wrong-target
#
# CAMs ({glue:md}`cam_setting`) on test images of a "five" for the true class and for a forced
# "one", for the pretrained model and the encoders finetuned on the most shots (first seed).
# Zero-shot, the true-class maps put {glue:text}`wrong_zs_true_mass_pct:.1f` % of their mass on
# the ink, which covers {glue:text}`wrong_area_pct:.1f` % of the image.
# ```
#
# Over all {glue:text}`n_wrong_images:.0f` test fives, the table gives the share of CAM mass on
# the ink (`mass`) and how diffuse the map is (`spread`: the entropy of the map as a distribution
# over pixels over that of a uniform map, 1 = flat). Zero-shot, the "five" map puts
# {glue:text}`wrong_zs_true_mass:.2f` of its mass on the ink against
# {glue:text}`wrong_zs_forced_mass:.2f` for the forced "one" (spread
# {glue:text}`wrong_zs_true_spread:.2f` against {glue:text}`wrong_zs_forced_spread:.2f`); after
# finetuning the image encoder: {glue:text}`wrong_image_encoder_true_mass:.2f` against
# {glue:text}`wrong_image_encoder_forced_mass:.2f` (spread
# {glue:text}`wrong_image_encoder_true_spread:.2f` against
# {glue:text}`wrong_image_encoder_forced_spread:.2f`). Against the source's "distracted and
# diffused": zero-shot, the forced map is {glue:md}`wrong_zs_verdict`; after finetuning the image
# encoder it is {glue:md}`wrong_image_encoder_verdict`.
#
# ### CAM mass inside the object
#
# The world's images come with exact object masks, so the source's reading of the maps
# ("the attention moves onto the object") can be measured: the fraction of the map's mass inside
# the mask, averaged over {glue:text}`n_cam_images:.0f` fixed test images and the seeds. A map
# spread evenly over the image scores the mask's area; for the handwritten digits the "mask" is
# the ink.

# %%
fig = finetune_parts.cam_mass_figure(results)
report.glue("fig_cam_mass", fig)
plt.close(fig)
finetune_parts.cam_mass_table(results)

# %% [markdown]
# ```{glue:figure} fig_cam_mass
# :name: fig-cam-mass
#
# Fraction of CAM mass ({glue:md}`cam_setting`) inside the object mask (world sets) or the ink
# (digits) against shots per class, one line per finetuned part (mean over seeds and test images,
# band ±1 std over seeds). Dotted: what a uniform map scores.
# ```
#
# On the in-distribution photos the pretrained model puts {glue:text}`mass_animals_zs:.2f` of its
# CAM mass inside the object (a uniform map: {glue:text}`mask_area_animals:.2f`); after the most
# shots, finetuning the image encoder gives {glue:text}`mass_animals_image_encoder:.2f`, the
# image projection {glue:text}`mass_animals_image_projection:.2f`, the text encoder
# {glue:text}`mass_animals_text_encoder:.2f` and the text projection
# {glue:text}`mass_animals_text_projection:.2f`. On the held-out sketch style the pretrained model
# scores {glue:text}`mass_flowers_zs:.2f` (uniform {glue:text}`mask_area_flowers:.2f`) and the
# finetuned image encoder {glue:text}`mass_flowers_image_encoder:.2f`. The source could only show
# the maps; this number is the check its Figures 3 and 4 could not make. Counting a part as moving
# the map onto the object when its mass at the most shots exceeds the pretrained model's by more
# than one standard deviation over seeds, the parts that do so are: {glue:md}`mass_movers_animals`
# on the in-distribution photos, {glue:md}`mass_movers_flowers` on the held-out sketch style and
# {glue:md}`mass_movers_mnist` on the handwritten digits (the ink).
#
# ## What it took
#
# Choosing the settings took {glue:text}`selection_minutes:.1f` min and the sweep of
# {glue:text}`n_models:.0f` finetuned models {glue:text}`sweep_minutes:.1f` min, of which
# the CAMs took {glue:text}`cam_minutes:.1f` min; finetuning and scoring alone
# ({glue:text}`finetune_minutes:.1f` min) is the budget the issue sets at 8 minutes on this
# machine's 2 CPU cores, and this run {glue:md}`budget_verdict` it. The whole chapter ran in
# {glue:text}`total_minutes:.1f` min.
#
# ## Limits
#
# - Scale: the embedded CLIP is a 4-layer ViT on 32-pixel images pretrained for minutes on a
#   synthetic world; real CLIP's encoders are ~100 times larger and saw 400 M pairs. What
#   transfers is the comparison between parts, not the magnitudes.
# - Steps are fixed per part (chosen at one shot count), as the issue asks: at the largest shot
#   counts a run sees each training image only a few times, so the right end of the curves is
#   an under-trained lower bound, and at one shot it sees each image many times.
# - The selection uses one seed and one shot count; the grids are small to stay in budget.
# - The source does not say how many steps or which learning rates it used, nor how it chose
#   them, so its tables and these are not like for like.
# - CAMs on a {glue:text}`grid_side:.0f`×{glue:text}`grid_side:.0f` patch grid are coarse; for the thin strokes of handwritten
#   digits the ink is a small, fragmented mask and the mass measure is rough there. The CAM
#   setting was chosen on the pretrained model's world photos and is applied unchanged to the
#   finetuned models.

# %%
report.glue("total_minutes", (time.perf_counter() - started) / 60)
report.glue("total_cpu_minutes", (time.process_time() - cpu_started) / 60)
