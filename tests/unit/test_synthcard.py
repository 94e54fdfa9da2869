"""The synthetic ID card generator: determinism, valid identities, correct geometry."""

from __future__ import annotations

import itertools
import json
import re
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import pytest

from synthcard import (
    PRESETS,
    Identity,
    make_photo,
    photograph,
    random_identity,
    render_back,
    render_front,
)
from synthcard.cli import main as cli_main
from synthcard.identity import DEFAULT_TODAY, ETHNICITIES

REGION_TSV = Path(__file__).resolve().parents[2] / "worker/recognition/data/region_codes.tsv"
CARD_ASPECT = 85.6 / 54.0
SIDES = ("front", "back", "double_side")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _region_codes() -> set[str]:
    codes = set()
    for line in REGION_TSV.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            codes.add(line.split("\t")[0])
    return codes


def _gb11643_ok(number: str) -> bool:
    weights = [2 ** (17 - i) % 11 for i in range(17)]
    total = sum(int(c) * w for c, w in zip(number[:17], weights, strict=True))
    return number[17] == "10X98765432"[total % 11]


def _add_years(d: date, n: int) -> date:
    return d.replace(year=d.year + n)


def _aspect(q: np.ndarray) -> float:
    top, bottom = np.linalg.norm(q[1] - q[0]), np.linalg.norm(q[2] - q[3])
    left, right = np.linalg.norm(q[3] - q[0]), np.linalg.norm(q[2] - q[1])
    return float((top + bottom) / (left + right))


@pytest.fixture(scope="module")
def identities() -> list[Identity]:
    rng = np.random.default_rng(1234)
    return [random_identity(rng) for _ in range(400)]


# --------------------------------------------------------------------------- identity


def test_ethnicity_table_is_the_56_groups() -> None:
    assert len(ETHNICITIES) == 56 == len(set(ETHNICITIES))
    assert "汉" in ETHNICITIES and "维吾尔" in ETHNICITIES
    assert not any(e.endswith("族") for e in ETHNICITIES)


def test_identity_numbers_are_valid(identities: list[Identity]) -> None:
    codes = _region_codes()
    for ident in identities:
        n = ident.number
        assert re.fullmatch(r"\d{17}[\dX]", n), n
        assert _gb11643_ok(n), n
        assert n[:6] in codes and n[:2] + "0000" in codes, n
        assert n[6:14] == ident.birth.strftime("%Y%m%d")
        assert (int(n[16]) % 2 == 1) == (ident.sex == "男")
        assert date(1940, 1, 1) <= ident.birth <= date(2020, 12, 31)


def test_identity_validity_period_follows_the_age_rule(identities: list[Identity]) -> None:
    expired = 0
    for ident in identities:
        vf, b = ident.valid_from, ident.birth
        assert b < vf <= DEFAULT_TODAY
        age = vf.year - b.year - ((vf.month, vf.day) < (b.month, b.day))
        expected = (_add_years(vf, 5) if age < 16 else _add_years(vf, 10) if age <= 25
                    else _add_years(vf, 20) if age <= 45 else "长期")
        assert ident.valid_to == expected, ident
        expired += isinstance(ident.valid_to, date) and ident.valid_to < DEFAULT_TODAY
    # Mostly valid cards, some expired ones.
    assert 0 < expired < len(identities) * 0.35


def test_identity_text_fields(identities: list[Identity]) -> None:
    for ident in identities:
        assert 11 <= len(ident.address) <= 40 and " " not in ident.address
        assert ident.issue.endswith(("公安局", "分局")) and " " not in ident.issue
        assert 2 <= len(ident.name) <= 10
        assert ident.ethnicity in ETHNICITIES
        assert ident.sex in ("男", "女")
    han = sum(i.ethnicity == "汉" for i in identities) / len(identities)
    assert 0.75 < han < 0.95
    dotted = [i for i in identities if "·" in i.name]
    assert dotted and all(i.ethnicity != "汉" for i in dotted)
    assert any(len(i.address) > 22 for i in identities)  # multi-line addresses occur


def test_vendor_fields_formats(identities: list[Identity]) -> None:
    ident = identities[0]
    front = ident.to_vendor_fields("front")
    assert set(front) == {"name", "sex", "ethnicity", "birth", "address", "number"}
    assert DATE_RE.match(front["birth"])
    back = ident.to_vendor_fields("back")
    assert set(back) == {"issue", "valid_from", "valid_to"}
    assert DATE_RE.match(back["valid_from"])
    assert back["valid_to"] == "长期" or DATE_RE.match(back["valid_to"])
    assert all(isinstance(v, str) for v in {**front, **back}.values())


def test_random_identity_is_deterministic() -> None:
    a = random_identity(np.random.default_rng(7))
    b = random_identity(np.random.default_rng(7))
    assert a == b


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("seed", range(12))
def test_rendered_text_stays_inside_the_card_without_overlaps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ident = random_identity(rng)
    for render in (render_front, render_back):
        layout: dict = {}
        card = render(ident, rng, scale=1.0, layout=layout)
        h, w = card.shape[:2]
        assert (h, w) == (540, 856) and card.dtype == np.uint8 and card.shape[2] == 4
        assert card[0, 0, 3] == 0 and card[h // 2, w // 2, 3] == 255  # rounded corners
        boxes = {k: v for k, v in layout["boxes"].items() if k != "valid_period"}
        margin = 1.5 * layout["px_per_mm"]
        for key, (x0, y0, x1, y1) in boxes.items():
            assert margin <= x0 < x1 <= w - margin, key
            assert margin <= y0 < y1 <= h - margin, key
            if key not in ("portrait", "emblem"):
                patch = card[int(y0):int(y1) + 1, int(x0):int(x1) + 1, :3]
                assert patch.min() < 130, f"{key} drawn too faint"
        for (a, ba), (b, bb) in itertools.combinations(boxes.items(), 2):
            overlap = ba[0] < bb[2] and bb[0] < ba[2] and ba[1] < bb[3] and bb[1] < ba[3]
            assert not overlap, (a, b)


def test_render_scale() -> None:
    ident = random_identity(np.random.default_rng(3))
    card = render_front(ident, np.random.default_rng(3), scale=2.0)
    assert card.shape == (1080, 1712, 4)


# --------------------------------------------------------------------------- photos


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("side", SIDES)
def test_every_preset_and_side(preset: str, side: str) -> None:
    case = make_photo(11, preset, side)
    img = case.image
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    h, w = img.shape[:2]
    assert 900 <= max(h, w) <= 2000
    decoded = cv2.imdecode(np.frombuffer(case.image_bytes, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(decoded, img)

    assert len(case.quads) == (2 if side == "double_side" else 1)
    for q in case.quads:
        assert q.shape == (4, 2)
        assert (q >= 5).all() and (q[:, 0] <= w - 6).all() and (q[:, 1] <= h - 6).all()
        assert abs(_aspect(q) / CARD_ASPECT - 1) <= 0.10
    if side == "double_side":
        area, _ = cv2.intersectConvexConvex(case.quads[0].astype(np.float32),
                                            case.quads[1].astype(np.float32))
        assert area == 0
        assert set(case.expected) == {"front", "back"}
        assert set(case.text_locations) == {"front", "back"}
    else:
        assert case.expected == case.identity.to_vendor_fields(side)
        assert set(case.text_locations) == set(case.expected)
    assert (case.portrait_location is None) == (side == "back")
    json.dumps(case.params)  # plain JSON values only


@pytest.mark.parametrize(("preset", "side", "seed"),
                         [("clean", "front", 0), ("perspective", "double_side", 5),
                          ("lowlight", "back", 9)])
def test_same_seed_same_bytes(preset: str, side: str, seed: int) -> None:
    a = make_photo(seed, preset, side)
    b = make_photo(seed, preset, side)
    assert a.image_bytes == b.image_bytes
    assert a.expected == b.expected
    assert make_photo(seed + 1, preset, side).image_bytes != a.image_bytes


def test_presets_do_what_they_say() -> None:
    small = [make_photo(s, "small", "front").params["coverage"] for s in range(3)]
    assert all(0.2 <= c <= 0.36 for c in small)
    rotated = [make_photo(s, "rotated", "front").params["rotation"] for s in range(6)]
    assert max(abs(((r + 180) % 360) - 180) for r in rotated) > 20
    assert make_photo(0, "cluttered", "front").params["background"].startswith("clutter")
    assert make_photo(0, "lowlight", "front").params["low_light"] is True
    assert make_photo(0, "glare_mild", "front").params["glare"] > 0


def test_quads_lie_on_the_card_corners() -> None:
    """Rectifying the photo with the quad must give back the rendered card."""
    rng = np.random.default_rng(99)
    ident = random_identity(rng)
    card = render_front(ident, rng, scale=1.0)
    photo = photograph([card], rng, rotation=37.0, perspective=0.06, coverage=0.5,
                       background="texture", out_size=1400)
    q = photo.quads[0].astype(np.float32)
    ch, cw = card.shape[:2]
    # Pixel-centre convention on both sides: the card's outer corners are at -0.5.
    dst = np.float32([[-0.5, -0.5], [cw - 0.5, -0.5], [cw - 0.5, ch - 0.5], [-0.5, ch - 0.5]])
    back = cv2.warpPerspective(photo.image, cv2.getPerspectiveTransform(q, dst), (cw, ch))
    inner = (slice(40, ch - 40), slice(40, cw - 40))
    diff = np.abs(back[inner].astype(int) - card[..., :3][inner].astype(int))
    assert diff.mean() < 5
    # A quad off by two pixels must match clearly worse.
    for shift in ([2, 0], [0, 2], [-2, 0], [0, -2]):
        shifted = q + np.float32(shift)
        off = cv2.warpPerspective(photo.image, cv2.getPerspectiveTransform(shifted, dst),
                                  (cw, ch))
        worse = np.abs(off[inner].astype(int) - card[..., :3][inner].astype(int)).mean()
        assert worse > diff.mean() * 2, shift


def test_photograph_rejects_no_cards() -> None:
    with pytest.raises(ValueError):
        photograph([], np.random.default_rng(0))


def test_make_photo_rejects_unknown_preset() -> None:
    with pytest.raises(ValueError):
        make_photo(0, "nope", "front")


# --------------------------------------------------------------------------- cli


def test_cli_writes_images_json_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    assert cli_main([str(out), "--count", "2", "--preset", "mild", "--side", "back",
                     "--seed", "4", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "0000.jpg", "0000.json", "0001.jpg", "0001.json", "manifest.jsonl"]
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    rec = json.loads((out / "0001.json").read_text(encoding="utf-8"))
    assert rec == json.loads(lines[1])
    assert rec["seed"] == 5 and rec["side"] == "back" and rec["preset"] == "mild"
    assert rec["expected"] == make_photo(5, "mild", "back").expected
    assert (out / "0001.jpg").read_bytes() == make_photo(5, "mild", "back").image_bytes
