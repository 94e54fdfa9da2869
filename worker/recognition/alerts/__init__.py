"""The eight alerts of the ``detect_*`` flags: one detector per module, run on demand.

Every detector reads one :class:`~.base.AlertContext` (the photo and one read card side,
with shared views computed once, on first use) and answers a score in 0..99. Only the
detectors the request names run (:func:`evaluate`); :func:`response_fields` turns their
scores into the vendor's ``detect_<alert>_result`` and ``score_info`` fields.

A score at or above the alert's threshold raises the alert. :data:`DEFAULT_THRESHOLDS`
are the documented defaults, calibrated on generated photos (``bench/alerts.py
--calibrate``); the setting ``IDCARD_ALERT_THRESHOLDS`` overrides any of them
(``blur=60,glare=45`` or JSON ``{"blur": 60}``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from idcard.options import ALERTS, RecognitionOptions
from worker.recognition.alerts.base import SCORE_MAX, AlertContext, Detector
from worker.recognition.alerts.blocking import BlockingDetector
from worker.recognition.alerts.blur import BlurDetector
from worker.recognition.alerts.border_integrity import BorderIntegrityDetector
from worker.recognition.alerts.copy import CopyDetector
from worker.recognition.alerts.glare import GlareDetector
from worker.recognition.alerts.interim import InterimDetector
from worker.recognition.alerts.reproduce import ReproduceDetector
from worker.recognition.alerts.tampering import TamperingDetector

__all__ = [
    "DEFAULT_THRESHOLDS",
    "REGISTRY",
    "AlertContext",
    "Detector",
    "evaluate",
    "response_fields",
    "thresholds",
]

#: alert name (``idcard.options.ALERTS``) -> its detector.
REGISTRY: dict[str, Detector] = {
    d.name: d
    for d in (
        ReproduceDetector(),
        CopyDetector(),
        TamperingDetector(),
        BorderIntegrityDetector(),
        BlockingDetector(),
        BlurDetector(),
        InterimDetector(),
        GlareDetector(),
    )
}
if set(REGISTRY) != set(ALERTS):  # pragma: no cover - a programming error
    raise RuntimeError(f"alert detectors {sorted(REGISTRY)} do not match ALERTS {ALERTS}")

#: The default threshold per alert: ``detect_<alert>_result`` is ``score >= threshold``.
#: Each detector maps its measurement so that its calibrated decision point scores 50.
DEFAULT_THRESHOLDS: dict[str, int] = {
    "reproduce": 50,
    "copy": 50,
    "tampering": 50,
    "border_integrity": 50,
    "blocking_within_border": 50,
    "blur": 50,
    "interim": 50,
    "glare": 50,
}


def thresholds(overrides: Mapping[str, int] | None = None) -> dict[str, int]:
    """The thresholds in force: the defaults, then the settings', then ``overrides``."""
    out = dict(DEFAULT_THRESHOLDS)
    if overrides is None:
        from idcard.settings import get_settings

        overrides = get_settings().alert_thresholds
    out.update(overrides)
    return out


def evaluate(ctx: AlertContext, names: Iterable[str]) -> dict[str, int]:
    """Scores (0..99) of the named alerts only; the others' detectors do not run."""
    scores = {}
    for name in names:
        value = int(REGISTRY[name].score(ctx))
        scores[name] = max(0, min(SCORE_MAX, value))
    return scores


def response_fields(ctx: AlertContext, options: RecognitionOptions,
                    threshold: Mapping[str, int] | None = None) -> dict:
    """The vendor fields for the alerts ``options`` asks for (``{}`` when none):
    ``detect_<alert>_result`` per alert and ``score_info`` with ``<alert>_score``."""
    names = options.alerts
    if not names:
        return {}
    scores = evaluate(ctx, names)
    limits = thresholds(threshold)
    out: dict = {f"detect_{n}_result": scores[n] >= limits[n] for n in names}
    out["score_info"] = {f"{n}_score": scores[n] for n in names}
    return out
