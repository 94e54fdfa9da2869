"""``idcard-ocr recognize`` as a user runs it: a subprocess on files, JSON on stdout
(contract section 4). Each run loads the OCR models, so the runs are few and each one
checks several things."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FRONT_CHECKS = {"valid_number", "valid_birth", "valid_sex"}
BACK_CHECKS = {"valid_date", "valid_validity_period"}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "idcard.cli", *args],
        cwd=cwd,  # not the repository: the installed package must work from anywhere
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )


def _no_trace(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout


@pytest.fixture(scope="module")
def photos(tmp_path_factory, make_case) -> dict:
    d = tmp_path_factory.mktemp("photos")
    out = {}
    for name, (seed, side) in {
        "front": (1, "front"),
        "back": (1, "back"),
        "double": (2, "double_side"),
        "front2": (2, "front"),
    }.items():
        case = make_case(seed, "clean", side)
        path = d / f"{name}.jpg"
        path.write_bytes(case.image_bytes)
        out[name] = (path, case)
    notimg = d / "notes.txt"
    notimg.write_text("this is not an image\n", encoding="utf-8")
    out["text"] = (notimg, None)
    out["missing"] = (d / "does-not-exist.jpg", None)
    return out


def test_help(tmp_path):
    top = run_cli("--help", cwd=tmp_path)
    assert top.returncode == 0, top.stderr
    assert "recognize" in top.stdout
    sub = run_cli("recognize", "--help", cwd=tmp_path)
    assert sub.returncode == 0, sub.stderr
    for opt in ("--side", "--verify", "--text-location", "--portrait-image",
                "--portrait-location", "--adjusted-image", "--jsonl", "--detect"):
        assert opt in sub.stdout, opt
    for side in ("front", "back", "double_side"):
        assert side in sub.stdout


def test_bad_side_is_a_usage_error(tmp_path, photos):
    proc = run_cli("recognize", str(photos["front"][0]), "--side", "left", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--side" in proc.stderr
    assert proc.stdout == ""


def test_one_image_prints_the_body(tmp_path, photos):
    path, case = photos["front"]
    proc = run_cli("recognize", str(path), cwd=tmp_path)
    _no_trace(proc)
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)  # one JSON document, pretty-printed or not
    assert body == {"result": case.expected}
    # Chinese is printed as-is, not as \\u escapes.
    assert case.expected["name"] in proc.stdout


def test_two_images_print_one_line_each(tmp_path, photos):
    (front, fcase), (back, bcase) = photos["front"], photos["back"]
    proc = run_cli("recognize", str(front), str(back), cwd=tmp_path)
    _no_trace(proc)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stdout
    assert [json.loads(ln) for ln in lines] == [
        {"file": str(front), "response": {"result": fcase.expected}},
        {"file": str(back), "response": {"result": bcase.expected}},
    ]


def test_missing_file_is_an_error_body(tmp_path, photos):
    path = photos["missing"][0]
    proc = run_cli("recognize", str(path), cwd=tmp_path)
    _no_trace(proc)
    assert proc.returncode == 1
    body = json.loads(proc.stdout)
    assert set(body) == {"error_code", "error_msg"}
    assert body["error_code"] == "IDC.0001", body  # README: the file could not be read
    assert body["error_msg"]


def test_non_image_is_ais0102(tmp_path, photos):
    proc = run_cli("recognize", str(photos["text"][0]), cwd=tmp_path)
    _no_trace(proc)
    assert proc.returncode == 1
    body = json.loads(proc.stdout)
    assert body["error_code"] == "AIS.0102"
    assert set(body) == {"error_code", "error_msg"}


def test_mixed_batch_exits_1_but_reports_every_file(tmp_path, photos):
    good, case = photos["front2"]
    missing, text = photos["missing"][0], photos["text"][0]
    proc = run_cli("recognize", str(good), str(missing), str(text), "--side", "front",
                   cwd=tmp_path)
    _no_trace(proc)
    assert proc.returncode == 1
    rows = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(good), str(missing), str(text)]
    assert rows[0]["response"] == {"result": case.expected}
    assert rows[1]["response"]["error_code"] == "IDC.0001"
    assert rows[2]["response"]["error_code"] == "AIS.0102"


def test_double_side_verify_text_location(tmp_path, photos):
    path, case = photos["double"]
    proc = run_cli("recognize", str(path), "--side", "double_side", "--verify",
                   "--text-location", "--jsonl", cwd=tmp_path)
    _no_trace(proc)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1  # --jsonl: a line even for one image
    row = json.loads(lines[0])
    assert row["file"] == str(path)
    res = row["response"]["result"]
    assert set(res) == {"front", "back"}
    front, back = res["front"], res["back"]
    for side, d, checks in (("front", front, FRONT_CHECKS), ("back", back, BACK_CHECKS)):
        fields = case.expected[side]
        assert {k: d[k] for k in fields} == fields
        # Exactly the asked-for outputs: verification and text locations, nothing else.
        assert set(d) == set(fields) | {"verification_result", "text_location"}
        assert set(d["verification_result"]) == checks
        assert all(v is True for v in d["verification_result"].values()), d
        assert set(d["text_location"]) == set(fields)
        for pts in d["text_location"].values():
            assert len(pts) == 4 and all(len(p) == 2 and all(type(v) is int for v in p)
                                         for p in pts)


def test_image_output_options(tmp_path, photos):
    path, case = photos["front"]
    proc = run_cli("recognize", str(path), "--side", "front", "--portrait-image",
                   "--portrait-location", "--adjusted-image", cwd=tmp_path)
    _no_trace(proc)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)["result"]
    assert set(res) == set(case.expected) | {"portrait_image", "portrait_location",
                                             "adjusted_image"}
    assert {k: res[k] for k in case.expected} == case.expected
    assert res["portrait_image"].startswith("/9j/")  # base64 of a JPEG (FF D8 FF)
    assert res["adjusted_image"].startswith("/9j/")
    assert len(res["portrait_location"]) == 4
