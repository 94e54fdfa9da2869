"""Synthetic Chinese resident ID card photos for tests and benchmarks.

No real card or face is used: identities are random but valid, cards are drawn from the
published layout, and photos are simulated.  Everything is deterministic from a seed.
"""

from .alerts import make_alert_photo
from .identity import Identity, random_identity
from .photo import PRESETS, Case, Photo, make_photo, photograph
from .render import render_back, render_front, render_interim

__all__ = [
    "PRESETS",
    "Case",
    "Identity",
    "Photo",
    "make_alert_photo",
    "make_photo",
    "photograph",
    "random_identity",
    "render_back",
    "render_front",
    "render_interim",
]
