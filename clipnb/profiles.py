"""What each profile runs on: the model and where its data comes from.

``embedded`` and ``smoke`` use the project's own CLIP pretrained on the generated world (offline,
CPU); ``full`` uses open_clip's ViT-B-32 with OpenAI weights (QuickGELU, as they were trained).
"""

from __future__ import annotations

from .models import ClipBundle, create_model
from .studies import PROFILES

#: Full-profile default: OpenAI weights need QuickGELU (plain ViT-B-32 only warns and scores lower).
FULL_MODEL = ("ViT-B-32-quickgelu", "openai")


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}. Known: {', '.join(PROFILES)}.")
    return profile


def load_model(profile: str, name: str = "", pretrained: str = "") -> ClipBundle:
    """The CLIP model a profile runs on; ``name``/``pretrained`` override it (any open_clip model)."""
    check_profile(profile)
    if name:
        return create_model(name, pretrained or None)
    if profile == "full":
        return create_model(*FULL_MODEL)
    from .pretrain import load_pretrained

    return load_pretrained(profile)


def is_offline(profile: str) -> bool:
    return check_profile(profile) != "full"
