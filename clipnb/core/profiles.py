"""The three profiles the notebooks run in.

``embedded`` and ``smoke`` use the project's own CLIP pretrained on the generated world (offline,
CPU); ``full`` uses open_clip's ViT-B-32 with OpenAI weights (see
:func:`clipnb.methods.backbones.load_model`).
"""

from __future__ import annotations

PROFILES: tuple[str, ...] = ("embedded", "smoke", "full")
DEFAULT_PROFILE = "embedded"


def check_profile(profile: str) -> str:
    """``profile`` if known, else one clear error listing the known ones."""
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}. Known: {', '.join(PROFILES)}.")
    return profile
