"""Copy: a black-and-white photocopy or scan instead of the card.

What it measures: how colourful the card is (:attr:`AlertContext.chroma_spread`): the
99th percentile of each pixel's distance in the Lab a*b* plane from the card's median
colour, after bringing the card's paper to a standard exposure.

Why: a real card always carries colour whichever side is shown: the blue captions and
the portrait on the front, the red and gold emblem on the back, tinted security print
on both. A black-and-white copy has none: its pixels lie on one grey axis, shifted as a
whole by the light it was photographed under (the median removes that cast). Sensor
noise and JPEG add a few units of chroma; real colour is tens of units. Exposure is
normalised first because chroma shrinks with lightness: a dim photo of a real card is
as colourful as a bright one once brought to the same level; pixels clipped white
(glare) carry no colour of the card and are left out.
"""

from __future__ import annotations

import math

from worker.recognition.alerts.base import AlertContext, logistic_score

# Score 50 at this chroma spread (Lab a*b* units), on a log scale: a copy measures
# 0-8, a colour card 12 and more (a card cut off or partly covered, whose outline takes
# in some background, down to 11.5).
CENTRE_CHROMA = 9.5
WIDTH_LOG = 0.15  # natural-log units


class CopyDetector:
    name = "copy"

    def measure(self, ctx: AlertContext) -> float:
        """The colour spread of the card (Lab a*b* distance from its median, p99)."""
        return ctx.chroma_spread

    def score(self, ctx: AlertContext) -> int:
        # Less colour, higher score.
        return logistic_score(-math.log(max(self.measure(ctx), 0.1)),
                              -math.log(CENTRE_CHROMA), WIDTH_LOG)
