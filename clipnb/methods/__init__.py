"""Reusable, study-agnostic methods: pretraining, heads, adapters, finetuning, saliency, decoders."""
