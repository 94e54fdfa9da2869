"""Reproduce: a photo of a screen or of a print instead of the card itself.

What it measures: how far the strongest periodic components of the card's own pixels
stand out of their spectral neighbourhood. A square of the photo inside the card (up to
512 px, not resampled) is windowed and Fourier transformed; the log power spectrum
minus its local mean (11 × 11 bins) is the prominence of each frequency, and the mean
of the three most prominent frequencies is the measure. The lowest frequencies (the
layout), the axes and the JPEG block lattice (multiples of 1/8 cycle per pixel, where
compression itself puts peaks) are left out.

Why: a screen is a lattice of red, green and blue sub-pixels and a print a lattice of
half-tone dots. Photographed, the lattice survives as sharp peaks in the spectrum, at
its own frequency when the camera resolves it or folded down as moiré when it does not;
either way some frequencies carry far more energy than their neighbours. A card's print
has no such lattice: text, portrait and guilloche spread their energy over many
frequencies, and sensor noise is flat.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from worker.recognition.alerts.base import AlertContext, logistic_score

MAX_PATCH = 512
MIN_PATCH = 64
MIN_FREQUENCY = 0.06  # cycles per pixel
TOP_PEAKS = 3
# Score 50 at this prominence (natural log of power over its neighbourhood); a card
# photographed directly measures 2.6-4, a screen or print 5 and more.
CENTRE_PROMINENCE = 4.35
WIDTH_PROMINENCE = 0.2


@functools.cache
def _masks(n: int) -> np.ndarray:
    f = (np.arange(n) - n // 2) / n
    fy, fx = np.meshgrid(f, f, indexing="ij")
    radius = np.hypot(fx, fy)
    # JPEG 8 × 8 blocks: energy at every (k/8, l/8); the axes carry the card's rows and
    # columns and the window's leakage.
    jx = np.abs(fx * 8 - np.round(fx * 8)) * n / 8
    jy = np.abs(fy * 8 - np.round(fy * 8)) * n / 8
    jpeg = (jx <= 1.5) & (jy <= 1.5)
    axis = (np.abs(fx) * n <= 1.5) | (np.abs(fy) * n <= 1.5)
    return (radius > MIN_FREQUENCY) & ~jpeg & ~axis & (fy >= 0)  # half: the spectrum is symmetric


class ReproduceDetector:
    name = "reproduce"

    def measure(self, ctx: AlertContext) -> float:
        patch = ctx.photo_card_patch
        n = min(patch.shape[0], patch.shape[1], MAX_PATCH)
        if n < MIN_PATCH:
            return 0.0
        p = patch[:n, :n].astype(np.float32)
        p -= p.mean()
        w = np.hanning(n).astype(np.float32)
        p *= w[:, None] * w[None, :]
        re_im = cv2.dft(p, flags=cv2.DFT_COMPLEX_OUTPUT)
        power = np.fft.fftshift(np.log(re_im[..., 0] ** 2 + re_im[..., 1] ** 2 + 1e-3))
        prominence = power - cv2.blur(power, (11, 11))
        values = prominence[_masks(n)]
        if values.size < TOP_PEAKS:
            return 0.0
        return float(np.mean(np.partition(values, -TOP_PEAKS)[-TOP_PEAKS:]))

    def score(self, ctx: AlertContext) -> int:
        return logistic_score(self.measure(ctx), CENTRE_PROMINENCE, WIDTH_PROMINENCE)
