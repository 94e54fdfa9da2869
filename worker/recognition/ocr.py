"""The OCR models: PP-OCR text detection, direction classification and recognition.

The ONNX models ship inside registry wheels, so nothing is fetched at run time:
detection (PP-OCRv4) and the direction classifier come with ``rapidocr-onnxruntime``,
recognition is the PP-OCRv6 small model that the ``rapidocr`` 3.x wheel carries (it
reads rare name and place characters that PP-OCRv4 mobile confused, 佘 as 余, 嫣 as 媽,
and its 18 700 characters hold every one of the region table's). They are loaded once
per process (:func:`get_ocr`). We call the three stages
separately rather than through ``RapidOCR.__call__`` because the engine decides where to
look: it runs detection on the rectified card only and recognition on the lines it needs.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from worker.recognition.ctc import constrained_beam_search, ctc_log_likelihoods

# Multiples of 32 are what the DB detector's down-sampling path needs.
_DET_STRIDE = 32


@dataclass(frozen=True)
class TextLine:
    """One detected line: ``quad`` is 4×2 (tl, tr, br, bl) in the image it was found in."""

    quad: np.ndarray
    text: str = ""
    score: float = 0.0
    # The detector joined the printed label to the value; ``quad`` covers the value only.
    label_merged: bool = False

    @property
    def x0(self) -> float:
        return float(self.quad[:, 0].min())

    @property
    def x1(self) -> float:
        return float(self.quad[:, 0].max())

    @property
    def y0(self) -> float:
        return float(self.quad[:, 1].min())

    @property
    def y1(self) -> float:
        return float(self.quad[:, 1].max())

    @property
    def cx(self) -> float:
        return float(self.quad[:, 0].mean())

    @property
    def cy(self) -> float:
        return float(self.quad[:, 1].mean())

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def with_text(self, text: str, score: float) -> TextLine:
        return TextLine(self.quad, text, score, self.label_merged)


class OcrEngine:
    """Thin, thread-safe wrapper around RapidOCR's three ONNX sessions."""

    def __init__(self, threads: int = 0) -> None:
        from rapidocr_onnxruntime import RapidOCR

        kwargs = {}
        if threads > 0:
            kwargs = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        rapid = RapidOCR(rec_model_path=str(rec_model_path()), **kwargs)
        self._rapid = rapid
        self._det = rapid.text_det
        self._cls = rapid.text_cls
        self._rec = rapid.text_rec
        # Every caller of the recogniser's session (greedy reading, frame scores) sees
        # traditional forms folded into the simplified ones the card prints.
        self._rec.session = _Folded(self._rec.session, self._rec.postprocess_op.character)
        # The second opinion for the few lines read twice (:meth:`choose_by_both`): the
        # PP-OCRv4 mobile model of the rapidocr-onnxruntime wheel, loaded on first use.
        self._rec_config = {
            "model_path": SECOND_REC_MODEL_PATH, "use_cuda": False,
            "rec_img_shape": list(self._rec.rec_image_shape),
            "rec_batch_num": self._rec.rec_batch_num,
            "intra_op_num_threads": threads if threads > 0 else -1,
            "inter_op_num_threads": 1 if threads > 0 else -1,
        }
        self._second = None
        # onnxruntime sessions are thread-safe, but RapidOCR's pre/post-processing keeps
        # per-call state on the objects, so one call at a time per process.
        self._lock = threading.Lock()

    def detect(self, bgr: np.ndarray, max_side: int = 960) -> list[TextLine]:
        """Text lines in ``bgr``; the image is scaled so its longer side is ``max_side``."""
        h, w = bgr.shape[:2]
        ratio = min(1.0, max_side / max(h, w))
        rh = max(_DET_STRIDE, int(round(h * ratio / _DET_STRIDE)) * _DET_STRIDE)
        rw = max(_DET_STRIDE, int(round(w * ratio / _DET_STRIDE)) * _DET_STRIDE)
        resized = cv2.resize(bgr, (rw, rh), interpolation=cv2.INTER_AREA)
        blob = (resized.astype(np.float32) * (1 / 127.5) - 1.0).transpose(2, 0, 1)[None]
        with self._lock:
            preds = self._det.infer(blob)[0]
            boxes, _scores = self._det.postprocess_op(preds, (h, w))
            boxes = self._det.filter_tag_det_res(boxes, (h, w))
        return [TextLine(np.asarray(b, dtype=np.float32)) for b in boxes]

    def classify_180(self, crops: list[np.ndarray]) -> list[tuple[bool, float]]:
        """For each line crop: (is upside down, confidence)."""
        if not crops:
            return []
        with self._lock:
            _imgs, res, _elapse = self._cls(crops)
        return [("180" in label, float(score)) for label, score in res]

    def recognize(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        if not crops:
            return []
        with self._lock:
            res, _elapse = self._rec(crops)
        return [(text, float(score)) for text, score, *_ in res]

    def best_of(
        self, crop: np.ndarray, candidates: list[str], proxies: dict[str, str] | None = None,
        priors: list[float] | None = None,
    ) -> tuple[str, float]:
        """The candidate the recogniser finds most likely in ``crop``, and its log-odds
        over the runner-up.

        Scores every candidate by its CTC likelihood under the recogniser's output, so
        a closed vocabulary (the 56 ethnic groups) is read as a choice among its words
        rather than as free text. ``priors`` (log-odds, one per candidate) weigh in what
        else is known about each.
        """
        probs = self.frame_probs(crop)
        index = self._rec.postprocess_op.dict
        # A character may be credited with its look-alikes' probability too: a rare
        # character the recogniser cannot output at all (仫 is missing from its
        # dictionary) is only ever seen as one of them.
        proxies = proxies or {}
        columns = [probs]
        virtual: dict[str, int] = {}
        for ch, alikes in proxies.items():
            ids = [index[c] for c in ch + alikes if c in index]
            if ids:
                virtual[ch] = probs.shape[1] + len(virtual)
                columns.append(probs[:, ids].sum(axis=1, keepdims=True))
        logp = np.log(np.clip(np.concatenate(columns, axis=1), 1e-12, 1.0))
        prior_of = dict(zip(candidates, priors or [0.0] * len(candidates), strict=True))
        # A character the recogniser cannot output at all, with no look-alike given,
        # leaves its candidate unscorable (a wildcard for it made such names win ties
        # they had no evidence for: 酃县 for 蠡县).
        kept = [cand for cand in candidates if cand and all(
            ch in virtual or ch in index for ch in cand)]
        labels = [[virtual[ch] if ch in virtual else index[ch] for ch in cand]
                  for cand in kept]
        if not labels:
            return "", 0.0
        ll = ctc_log_likelihoods(logp, labels) + np.array([prior_of[c] for c in kept])
        order = np.argsort(-ll)
        margin = float(ll[order[0]] - ll[order[1]]) if len(order) > 1 else float("inf")
        return kept[int(order[0])], margin

    def frame_probs(self, crop: np.ndarray, second: bool = False) -> np.ndarray:
        """The recogniser's T×C per-frame character probabilities for one line
        (``second``: the second model's)."""
        rec = self._second_rec() if second else self._rec
        h, w = crop.shape[:2]
        imgc, imgh, imgw = rec.rec_image_shape[:3]
        ratio = max(imgw / imgh, w / max(h, 1))
        blob = rec.resize_norm_img(crop, ratio)[None].astype(np.float32)
        with self._lock:
            return rec.session(blob)[0][0]

    def _second_rec(self):
        with self._lock:
            if self._second is None:
                from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer

                rec = TextRecognizer(self._rec_config)
                rec.session = _Folded(rec.session, rec.postprocess_op.character)
                self._second = rec
            return self._second

    def read_single(self, crop: np.ndarray, second: bool = False) -> tuple[str, float]:
        """One line read on its own (no padding to a batch's widest line)."""
        rec = self._second_rec() if second else self._rec
        with self._lock:
            (text, score, *_), = rec([crop])[0]
        return text, float(score)

    def likelihoods_by_model(self, crop: np.ndarray, candidates: list[str]
                             ) -> list[np.ndarray | None]:
        """Each candidate's CTC log-likelihood in ``crop`` under the first model and under
        the second (None for a model that cannot spell every candidate)."""
        out: list[np.ndarray | None] = []
        for second in (False, True):
            rec = self._second_rec() if second else self._rec
            index = rec.postprocess_op.dict
            if not all(c and all(ch in index for ch in c) for c in candidates):
                out.append(None)
                continue
            logp = np.log(np.clip(self.frame_probs(crop, second), 1e-12, 1.0))
            out.append(ctc_log_likelihoods(logp, [[index[ch] for ch in c] for c in candidates]))
        return out

    def choose_by_both(self, crop: np.ndarray, candidates: list[str]) -> str:
        """The candidate that both models together find likeliest in ``crop``: the sum
        of its CTC log-likelihoods under each (a character one model cannot output
        leaves that model out for every candidate)."""
        kept = [c for c in dict.fromkeys(candidates) if c]
        if len(kept) <= 1:
            return kept[0] if kept else ""
        total = np.zeros(len(kept))
        for second in (False, True):
            rec = self._second_rec() if second else self._rec
            index = rec.postprocess_op.dict
            if not all(ch in index for c in kept for ch in c):
                continue
            logp = np.log(np.clip(self.frame_probs(crop, second), 1e-12, 1.0))
            total += ctc_log_likelihoods(logp, [[index[ch] for ch in c] for c in kept])
        return kept[int(np.argmax(total))]

    def choose_across(self, views: list[tuple[np.ndarray, list[str]]]) -> int:
        """Which candidate both models find likeliest over several images of it: each
        view is an image and the candidates as that image shows them (with or without
        its label), in the same order; the index of the highest summed CTC
        log-likelihood (a view a model cannot spell leaves that model out of it)."""
        total = np.zeros(len(views[0][1]))
        for crop, candidates in views:
            for second in (False, True):
                rec = self._second_rec() if second else self._rec
                index = rec.postprocess_op.dict
                if not all(c and all(ch in index for ch in c) for c in candidates):
                    continue
                logp = np.log(np.clip(self.frame_probs(crop, second), 1e-12, 1.0))
                total += ctc_log_likelihoods(logp, [[index[ch] for ch in c] for c in candidates])
        return int(np.argmax(total))

    def read_constrained(
        self, crop: np.ndarray, alphabet: str, length: int, accept: Callable[[str], bool]
    ) -> str | None:
        """The most probable ``length``-character reading over ``alphabet`` that
        ``accept`` passes (e.g. an ID number whose checksum holds)."""
        index = self._rec.postprocess_op.dict
        symbols = {ch: index[ch] for ch in alphabet if ch in index}
        return constrained_beam_search(self.frame_probs(crop), symbols, length, accept)

    def full_image(self, bgr: np.ndarray) -> list[TextLine]:
        """Plain RapidOCR on the whole image: the baseline the benchmarks compare with."""
        with self._lock:
            res, _ = self._rapid(bgr)
        return [TextLine(np.asarray(q, dtype=np.float32), t, float(s)) for q, t, s in res or []]


# The PP-OCRv4 mobile recogniser of the rapidocr-onnxruntime wheel: the second opinion.
SECOND_REC_MODEL_PATH = os.path.join(
    os.path.dirname(importlib.util.find_spec("rapidocr_onnxruntime").origin or ""),
    "models", "ch_PP-OCRv4_rec_infer.onnx")

# The recognition model inside the ``rapidocr`` wheel (found without importing it).
REC_MODEL_PACKAGE = "rapidocr"
REC_MODEL_FILE = "models/PP-OCRv6_rec_small.onnx"


def rec_model_path() -> str:
    spec = importlib.util.find_spec(REC_MODEL_PACKAGE)
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(root, REC_MODEL_FILE)
        if os.path.isfile(path):
            return path
    raise RuntimeError(
        f"the recognition model {REC_MODEL_FILE} of the '{REC_MODEL_PACKAGE}' package is "
        "missing: pip install -e . installs it"
    )


# Characters printed on cards in their traditional form: standard characters of their
# own (乾 in 乾县, 於 as a surname), never folded.
_STANDARD_TRADITIONAL = frozenset("乾於徵噁藉夥")


@functools.cache
def traditional_to_simplified() -> dict[str, str]:
    """Traditional character → its simplified form (OpenCC's character table, first
    choice), from the ``opencc-python-reimplemented`` package's data; empty without it."""
    spec = importlib.util.find_spec("opencc")
    table: dict[str, str] = {}
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(root, "dictionary", "TSCharacters.txt")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                trad, _, simp = line.rstrip("\n").partition("\t")
                first = simp.split(" ")[0]
                if len(trad) == 1 and len(first) == 1 and first != trad:
                    table[trad] = first
        break
    return table


def fold_columns(characters: list[str], keep: set[str] | frozenset[str] = frozenset()
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) column indices: each traditional character the recogniser can
    output and its simplified form, where both are in ``characters`` and the source is
    neither in ``keep`` nor a standard character of its own."""
    from worker.recognition import idnumber

    index = {ch: i for i, ch in enumerate(characters)}
    places = set("".join(idnumber._region_table().values()))
    src, dst = [], []
    for trad, simp in traditional_to_simplified().items():
        if (trad in index and simp in index and trad not in keep and trad not in places
                and trad not in _STANDARD_TRADITIONAL):
            src.append(index[trad])
            dst.append(index[simp])
    return np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64)


# Below this a traditional form's probability in a frame is noise, left where it is.
_FOLD_MIN_PROB = 1e-4


# Scripts a resident ID card never prints: Japanese kana (the middle dot ・ and the
# prolonged sound mark ー excepted: they stand in for · and -), and Hangul.
_FOREIGN_RANGES = ((0x3041, 0x3096), (0x30A1, 0x30FA), (0x31F0, 0x31FF), (0xFF66, 0xFF9D),
                   (0x1100, 0x11FF), (0x3131, 0x318E), (0xAC00, 0xD7A3))


def foreign_columns(characters: list[str]) -> np.ndarray:
    """Columns of characters from scripts a card never prints."""
    return np.array([i for i, ch in enumerate(characters) if len(ch) == 1 and any(
        lo <= ord(ch) <= hi for lo, hi in _FOREIGN_RANGES)], dtype=np.int64)


class _Folded:
    """The recogniser's session with the probability of each traditional character
    added to its simplified form's.

    Resident ID cards print simplified characters, but the recogniser's vocabulary has
    both forms and now and then reads 车 as 車; a frame's evidence for either is
    evidence for the character the card can carry. Kana and Hangul, which no card
    prints, get no probability at all (才 came out as オ).
    """

    def __init__(self, session: Callable, characters: list[str]) -> None:
        self._session = session
        src, dst = fold_columns(characters)
        order = np.argsort(dst, kind="stable")
        self._src, dst = src[order], dst[order]
        # Sources grouped by target: several traditional forms may share one.
        self._targets, self._starts = np.unique(dst, return_index=True)
        self._foreign = foreign_columns(characters)

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        outs = list(self._session(blob))
        if self._src.size or self._foreign.size:
            probs = outs[0]
            if not probs.flags.writeable:
                probs = outs[0] = probs.copy()
            flat = probs.reshape(-1, probs.shape[-1])
            flat[:, self._foreign] = 0.0
            moved = flat[:, self._src]
            # Only frames where a traditional form has any weight need the work.
            rows = np.flatnonzero(moved.max(axis=1, initial=0.0) > _FOLD_MIN_PROB)[:, None]
            if rows.size:
                flat[rows, self._targets] += np.add.reduceat(
                    moved[rows[:, 0]], self._starts, axis=1)
                flat[rows, self._src] = 0.0
        return outs

    def __getattr__(self, name: str):
        return getattr(self._session, name)


def crop_line(
    bgr: np.ndarray, quad: np.ndarray, pad: float = 0.0, hpad: float | None = None
) -> np.ndarray:
    """The line under ``quad`` warped upright.

    ``pad`` grows it above and below, ``hpad`` left and right (default ``pad``), both as
    fractions of the line's height.
    """
    quad = np.asarray(quad, dtype=np.float32)
    width = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[3] - quad[2])))
    height = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
    width, height = max(width, 2), max(height, 2)
    p = int(round(pad * height))
    q = int(round((pad if hpad is None else hpad) * height))
    dst = np.array(
        [[q, p], [width + q, p], [width + q, height + p], [q, height + p]], dtype=np.float32
    )
    m = cv2.getPerspectiveTransform(quad, dst)
    return cv2.warpPerspective(
        bgr, m, (width + 2 * q, height + 2 * p),
        flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE,
    )


@functools.cache
def get_ocr() -> OcrEngine:
    """The process-wide engine, loaded on first use (about a second)."""
    threads = int(os.environ.get("IDCARD_OCR_THREADS", "0") or 0)
    return OcrEngine(threads=threads)
