"""Decoding the recogniser's frame probabilities under what we know about the text.

The recogniser (CTC) gives, for each horizontal frame of a line, a probability per
character. Greedy decoding takes the best character per frame; when we know more — the
text is one of 56 names, or exactly 18 digits whose last one is a checksum — we search
for the most probable text that satisfies it instead.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def ctc_log_likelihoods(logp: np.ndarray, labels: list[list[int]]) -> np.ndarray:
    """log P(label | frames) for each label under CTC (blank = class 0), all at once.

    ``logp`` is T×C log-probabilities. The forward recursion runs over every label's
    extended state sequence together, so scoring 100 short words costs T vector steps.
    """
    t_len = logp.shape[0]
    k = len(labels)
    lmax = max(len(lab) for lab in labels)
    s_len = 2 * lmax + 1
    ext = np.zeros((k, s_len), dtype=np.int64)
    lengths = np.array([len(lab) for lab in labels])
    for i, lab in enumerate(labels):
        ext[i, 1 : 2 * len(lab) : 2] = lab
    states = np.arange(s_len)
    valid = states[None, :] < (2 * lengths[:, None] + 1)
    # A label state may skip the blank before it unless it repeats the previous label.
    prev2 = np.concatenate([np.full((k, 2), -1), ext[:, :-2]], axis=1)
    skip = (states[None, :] % 2 == 1) & (states[None, :] >= 2) & (ext != prev2)
    neg = -np.inf
    alpha = np.full((k, s_len), neg)
    alpha[:, 0] = logp[0, 0]
    alpha[:, 1] = logp[0, ext[:, 1]]
    alpha[~valid] = neg
    for t in range(1, t_len):
        a1 = np.concatenate([np.full((k, 1), neg), alpha[:, :-1]], axis=1)
        a2 = np.concatenate([np.full((k, 2), neg), alpha[:, :-2]], axis=1)
        a2 = np.where(skip, a2, neg)
        with np.errstate(invalid="ignore"):
            alpha = np.logaddexp(np.logaddexp(alpha, a1), a2) + logp[t, ext]
        alpha[~valid] = neg
    last = 2 * lengths
    rows = np.arange(k)
    return np.logaddexp(alpha[rows, last], alpha[rows, last - 1])


def constrained_beam_search(
    probs: np.ndarray,
    alphabet: dict[str, int],
    length: int,
    accept: Callable[[str], bool],
    beam: int = 32,
) -> str | None:
    """The most probable text of exactly ``length`` characters from ``alphabet`` that
    ``accept`` passes, by CTC prefix beam search; None when no beam survives.

    ``probs`` is T×C (class 0 = blank). Prefixes longer than ``length`` are dropped as
    they form, and the beam keeps ``beam`` prefixes per frame.
    """
    symbols = list(alphabet.items())
    # prefix -> (P(ending in blank), P(ending in its last symbol))
    beams: dict[str, tuple[float, float]] = {"": (1.0, 0.0)}
    for t in range(probs.shape[0]):
        row = probs[t]
        blank = float(row[0])
        nxt: dict[str, list[float]] = {}

        def add(prefix: str, pb: float, pnb: float, nxt: dict = nxt) -> None:
            cur = nxt.setdefault(prefix, [0.0, 0.0])
            cur[0] += pb
            cur[1] += pnb

        for prefix, (pb, pnb) in beams.items():
            total = pb + pnb
            add(prefix, total * blank, 0.0)
            last = prefix[-1] if prefix else None
            for ch, idx in symbols:
                p = float(row[idx])
                if p < 1e-4:
                    continue
                if ch == last:
                    add(prefix, 0.0, pnb * p)  # the same symbol continues
                    if len(prefix) < length:
                        add(prefix + ch, 0.0, pb * p)  # a repeat after a blank
                elif len(prefix) < length:
                    add(prefix + ch, 0.0, total * p)
        ranked = sorted(nxt.items(), key=lambda kv: kv[1][0] + kv[1][1], reverse=True)[:beam]
        norm = sum(v[0] + v[1] for _, v in ranked) or 1.0
        beams = {k: (v[0] / norm, v[1] / norm) for k, v in ranked}
    finals = sorted(
        ((sum(v), k) for k, v in beams.items() if len(k) == length), reverse=True
    )
    for _score, text in finals:
        if accept(text):
            return text
    return None
