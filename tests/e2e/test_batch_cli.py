"""``idcard-ocr batch`` in local mode, as a user runs it: a subprocess over a folder or a
manifest of generated photos, results in JSON Lines or CSV, a summary on stdout, and
runs killed half-way (SIGKILL, SIGINT) then resumed.

Every run loads the OCR models and reads each photo for about a second, so the photos
are few and each run checks several things.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

FIELDS = ("name", "sex", "ethnicity", "birth", "address", "number", "issue", "valid_from",
          "valid_to")
# (seed, side) of clean photos that read exactly (tests/unit/test_engine.py style).
CARDS = {"a-front1.jpg": (1, "front"), "sub/b-back1.jpg": (1, "back"),
         "c-front2.jpg": (2, "front"), "sub/deeper/d-back4.jpg": (4, "back"),
         "e-front6.jpg": (6, "front"), "f-back7.jpg": (7, "back")}
BROKEN = "z-broken.jpg"
RESUME_HINT = "Run the same command again to resume"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "idcard.cli", "batch", *args]


def run_batch(*args: str, cwd: Path, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), cwd=cwd, capture_output=True, text=True,
                          encoding="utf-8", timeout=300,
                          env={**os.environ, **(env or {})})


def no_trace(proc: Any, stderr: str | None = None) -> None:
    err = proc.stderr if stderr is None else stderr
    assert "Traceback" not in err, err


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def photos(tmp_path_factory, photo_folder) -> tuple[Path, dict[str, Any]]:
    """A folder tree of six readable cards, a broken image and a file that is no image;
    and the expected fields by absolute path."""
    root = tmp_path_factory.mktemp("batch") / "photos"
    expected = photo_folder(root, CARDS, (BROKEN, b"\xff\xd8 this is not a JPEG"))
    (root / "notes.txt").write_text("not an image: not an item\n", encoding="utf-8")
    return root, expected


def fields_of(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k in FIELDS}


def test_folder_to_jsonl(tmp_path, photos):
    root, expected = photos
    out = tmp_path / "results.jsonl"
    proc = run_batch(str(root), "--out", str(out), cwd=tmp_path)
    no_trace(proc)
    assert proc.returncode == 1, proc.stderr  # the broken image failed
    rows = jsonl(out)
    assert sorted(r["file"] for r in rows) == sorted([*expected, str(root / BROKEN)])
    for row in rows:
        assert set(row) == {"file", "response"}
        if row["file"] in expected:  # exactly what recognize --jsonl prints
            assert row["response"] == {"result": expected[row["file"]]}, row["file"]
        else:
            assert row["response"]["error_code"] == "AIS.0102"
            assert set(row["response"]) == {"error_code", "error_msg"}
    summary = json.loads(proc.stdout)
    assert summary["mode"] == "local" and summary["processes"] == 1
    assert summary["total"] == 7 and summary["processed"] == 7
    assert summary["already_done"] == 0 and summary["remaining"] == 0
    assert summary["complete"] is True
    assert summary["status"] == {"ok": 6, "error": 1}
    assert summary["error_codes"] == {"AIS.0102": 1}
    assert summary["alerts"] == {}
    assert summary["seconds"] > 0 and summary["items_per_second"] > 0
    assert 0 < summary["engine_seconds_per_item"] < summary["seconds"]
    # Neither the progress line (off: stderr is not a terminal) nor anything else.
    assert proc.stderr == ""


def test_folder_to_csv_with_two_processes_and_alerts(tmp_path, photos):
    root, expected = photos
    out = tmp_path / "results.csv"
    summary_file = tmp_path / "summary.json"
    proc = run_batch(str(root), "--out", str(out), "--processes", "2",
                     "--detect", "blur,glare", "--summary", str(summary_file),
                     "--progress", cwd=tmp_path)
    no_trace(proc)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""  # the summary went to --summary
    # --progress forces the line into a non-terminal stderr; it carries counts only.
    assert "batch: 7/7" in proc.stderr
    assert not any(Path(p).name in proc.stderr for p in expected)
    rows = csv_rows(out)
    header = out.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == ["file", "status", "error_code", "error_msg", *FIELDS,
                      "detect_blur_result", "detect_glare_result"]  # alerts in FLAGS order
    assert len(rows) == 7
    raised = {"blur": 0, "glare": 0}
    for row in rows:
        if row["file"] in expected:
            want = expected[row["file"]]
            assert row["status"] == "ok" and row["error_code"] == ""
            assert {f: row[f] for f in FIELDS} == {f: want.get(f, "") for f in FIELDS}
            for alert in raised:
                assert row[f"detect_{alert}_result"] in ("true", "false")
                raised[alert] += row[f"detect_{alert}_result"] == "true"
        else:
            assert row["file"] == str(root / BROKEN)
            assert row["status"] == "error" and row["error_code"] == "AIS.0102"
            assert row["error_msg"]
            assert all(row[f] == "" for f in FIELDS)
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    assert summary["processes"] == 2
    assert summary["status"] == {"ok": 6, "error": 1}
    assert summary["alerts"] == raised


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def file_server(photos) -> Iterator[str]:
    """The photo folder over HTTP on 127.0.0.1: its base URL."""
    root, _ = photos
    httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                functools.partial(_QuietFiles, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_csv_manifest_with_per_item_options(tmp_path, photos):
    root, expected = photos
    front, back = root / "a-front1.jpg", root / "sub/b-back1.jpg"
    lists = tmp_path / "lists"
    lists.mkdir()
    manifest = lists / "nightly.csv"
    relative = os.path.relpath(front, lists)  # resolved against the manifest's folder
    manifest.write_text(
        "Path,side,return_verification,detect_blur,customer_id\n"
        f"{relative},,false,,c-1\n"  # overrides --verify: no verification_result
        f"{back},back,,yes,c-2\n"  # --verify stays, and a blur verdict is added
        ",front,,,c-3\n"  # names no image
        "missing.jpg,,,,c-4\n"
        f"{root / 'c-front2.jpg'},sideways,,,c-5\n"
        f"{root / 'e-front6.jpg'},,perhaps,,c-6\n",
        encoding="utf-8")
    out = tmp_path / "manifest-results.jsonl"
    proc = run_batch(str(manifest), "--out", str(out), "--verify", cwd=tmp_path)
    no_trace(proc)
    assert proc.returncode == 1
    assert "customer_id" in proc.stderr  # an unknown column is named, and ignored
    rows = {r["file"]: r["response"] for r in jsonl(out)}
    assert set(rows) == {relative, str(back), "nightly.csv:4", "missing.jpg",
                         str(root / "c-front2.jpg"), str(root / "e-front6.jpg")}
    assert rows[relative] == {"result": expected[str(front)]}
    res = rows[str(back)]["result"]
    assert fields_of(res) == expected[str(back)]
    assert set(res) == set(expected[str(back)]) | {"verification_result",
                                                    "detect_blur_result", "score_info"}
    assert set(res["score_info"]) == {"blur_score"}
    assert rows["nightly.csv:4"]["error_code"] == "AIS.0101"
    assert rows["missing.jpg"]["error_code"] == "IDC.0001"
    assert rows[str(root / "c-front2.jpg")]["error_code"] == "AIS.0101"  # bad side
    assert rows[str(root / "e-front6.jpg")]["error_code"] == "AIS.0101"  # not a boolean
    summary = json.loads(proc.stdout)
    assert summary["status"] == {"ok": 2, "error": 4}
    assert summary["error_codes"] == {"AIS.0101": 3, "IDC.0001": 1}
    assert summary["alerts"] == {"blur": int(res["detect_blur_result"])}


def test_jsonl_manifest_with_urls_and_per_item_options(tmp_path, photos, file_server):
    root, expected = photos
    manifest = tmp_path / "items.jsonl"
    lines = [
        {"file": str(root / "c-front2.jpg"), "return_text_location": True},
        # Downloaded by the workers' SSRF-safe fetcher: 127.0.0.1 only because the
        # environment allows it (IDCARD_URL_ALLOW_HOSTS), a private address never.
        {"url": f"{file_server}/f-back7.jpg", "side": "back"},
        {"url": "http://10.0.0.1/card.jpg"},
        {"path": str(root / "e-front6.jpg"), "return_verification": "true"},  # JSON: bool
        {"client_reference": "no image here"},
    ]
    text = "\n".join(json.dumps(x) for x in lines[:2]) + "\nnot json at all\n\n"
    text += "\n".join(json.dumps(x) for x in lines[2:]) + "\n"
    manifest.write_text(text, encoding="utf-8")
    out = tmp_path / "items.csv"
    proc = run_batch(str(manifest), "--out", str(out), cwd=tmp_path,
                     env={"IDCARD_URL_ALLOW_HOSTS": "127.0.0.1"})
    no_trace(proc)
    assert proc.returncode == 1
    rows = {r["file"]: r for r in csv_rows(out)}
    assert set(rows) == {str(root / "c-front2.jpg"), f"{file_server}/f-back7.jpg",
                         "http://10.0.0.1/card.jpg", str(root / "e-front6.jpg"),
                         "items.jsonl:3", "items.jsonl:7"}
    for key, path in ((str(root / "c-front2.jpg"), root / "c-front2.jpg"),
                      (f"{file_server}/f-back7.jpg", root / "f-back7.jpg")):
        want = expected[str(path)]
        assert rows[key]["status"] == "ok"
        assert {f: rows[key][f] for f in FIELDS} == {f: want.get(f, "") for f in FIELDS}
    assert rows["http://10.0.0.1/card.jpg"]["error_code"] == "IDC.0202"
    assert rows[str(root / "e-front6.jpg")]["error_code"] == "AIS.0101"
    assert rows["items.jsonl:3"]["error_code"] == "AIS.0101"
    assert rows["items.jsonl:7"]["error_code"] == "AIS.0101"
    assert json.loads(proc.stdout)["status"] == {"ok": 2, "error": 4}


# --- killed and resumed ---------------------------------------------------------------


def start_batch(*args: str, cwd: Path) -> tuple[subprocess.Popen, Path, Path]:
    """The batch in a session of its own (signals reach it alone); stdout and stderr
    go to files."""
    stdout, stderr = cwd / "stdout.txt", cwd / "stderr.txt"
    with open(stdout, "wb") as so, open(stderr, "wb") as se:
        # As from a terminal: a suite started in the background (`cmd &` without job
        # control) passes SIGINT on ignored, and Python then installs no Ctrl-C handler.
        proc = subprocess.Popen(cli(*args), cwd=cwd, stdout=so, stderr=se,
                                start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, stdout, stderr


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_bytes().count(b"\n") >= n):
        assert proc.poll() is None, "the batch ended before it could be interrupted"
        assert time.monotonic() < deadline, f"no {n} lines in {path}"
        time.sleep(0.02)


def group_gone(pgid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_resume_after_sigkill_and_a_torn_last_line(tmp_path, photos):
    root, expected = photos
    out = tmp_path / "nightly.jsonl"
    args = (str(root), "--out", str(out))
    proc, _, _ = start_batch(*args, cwd=tmp_path)
    wait_for_lines(out, 2, proc)
    os.kill(proc.pid, signal.SIGKILL)  # the batch process only, like kill -9 PID
    proc.wait(30)
    # Its recognition process notices and goes too: nothing is left running.
    assert group_gone(proc.pid), "a pool process outlived the killed batch"
    first = out.read_bytes()
    assert first.endswith(b"\n")
    written = [json.loads(line)["file"] for line in first.splitlines()]
    assert 2 <= len(written) < 7, "the kill came too late to test a resume"
    # A crash in the middle of a write leaves a partial line: it must be dropped.
    with open(out, "ab") as f:
        f.write(b'{"file": "' + str(root / "f-back7.jpg").encode() + b'", "resp')

    proc = run_batch(*args, cwd=tmp_path)
    no_trace(proc)
    assert proc.returncode == 1  # the broken image
    final = out.read_bytes()
    assert final.startswith(first)  # kept as it was, appended after the good lines
    rows = jsonl(out)
    files = [r["file"] for r in rows]
    assert sorted(files) == sorted([*expected, str(root / BROKEN)])  # each exactly once
    for row in rows:
        if row["file"] in expected:
            assert row["response"] == {"result": expected[row["file"]]}
    summary = json.loads(proc.stdout)
    assert summary["already_done"] == len(written)
    assert summary["processed"] == 7 - len(written)  # nothing read twice
    assert summary["complete"] is True and summary["status"] == {"ok": 6, "error": 1}

    again = run_batch(*args, cwd=tmp_path)  # all done: nothing to do, same verdict
    assert again.returncode == 1
    assert json.loads(again.stdout)["processed"] == 0
    assert out.read_bytes() == final


@pytest.fixture(scope="module")
def more_photos(photos, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """The six cards three times over, and the broken image: with two processes, more
    items than can be in flight at once (so a Ctrl-C always finds work left to stop,
    however late it lands on a busy machine)."""
    src, expected = photos
    root = tmp_path_factory.mktemp("batch-more") / "photos"
    more = {}
    for copy in range(3):
        for path, fields in expected.items():
            dest = root / f"{copy}-{Path(path).name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(Path(path).read_bytes())
            more[str(dest)] = fields
    (root / BROKEN).write_bytes((src / BROKEN).read_bytes())
    return root, more


def test_resume_after_ctrl_c_with_csv(tmp_path, more_photos):
    root, expected = more_photos
    total = len(expected) + 1
    out = tmp_path / "nightly.csv"
    args = (str(root), "--out", str(out), "--processes", "2", "--detect", "glare")
    proc, stdout, stderr = start_batch(*args, cwd=tmp_path)
    wait_for_lines(out, 3, proc)  # the header and two items
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(30) == 130
    err = stderr.read_text(encoding="utf-8")
    assert "Traceback" not in err, err
    assert RESUME_HINT in err and str(out) in err
    summary = json.loads(stdout.read_text(encoding="utf-8"))
    assert summary["complete"] is False
    assert group_gone(proc.pid)
    first = out.read_bytes()
    done_first = [r["file"] for r in csv_rows(out)]
    assert 2 <= len(done_first) < total
    with open(out, "ab") as f:  # a torn row
        f.write(str(root / "2-f-back7.jpg").encode() + b",ok,,,")

    proc = run_batch(*args, cwd=tmp_path)
    no_trace(proc)
    assert proc.returncode == 1
    assert out.read_bytes().startswith(first)
    text = out.read_text(encoding="utf-8")
    assert text.count("file,status,") == 1  # one header
    rows = csv_rows(out)
    assert sorted(r["file"] for r in rows) == sorted([*expected, str(root / BROKEN)])
    for row in rows:
        if row["file"] in expected:
            want = expected[row["file"]]
            assert {f: row[f] for f in FIELDS} == {f: want.get(f, "") for f in FIELDS}
    summary = json.loads(proc.stdout)
    assert summary["already_done"] == len(done_first)
    assert summary["processed"] == total - len(done_first)
    assert summary["status"] == {"ok": total - 1, "error": 1}
    # The whole file counts, the earlier run's rows too.
    assert summary["alerts"] == {"glare": sum(r["detect_glare_result"] == "true"
                                              for r in rows)}


# --- usage errors ----------------------------------------------------------------------


def test_usage_errors_are_one_line_and_exit_2(tmp_path, photos):
    root, _ = photos
    out = str(tmp_path / "x.jsonl")
    (tmp_path / "latin1.csv").write_bytes("file\nZhāng.jpg\n".encode("utf-16"))
    (tmp_path / "columns.csv").write_text("name,side\nx,front\n", encoding="utf-8")
    (tmp_path / "other.csv").write_text("something,else\n1,2\n", encoding="utf-8")
    cases = [
        ((str(tmp_path / "nowhere"), "--out", out), "no such file or folder"),
        ((str(root), "--out", str(tmp_path / "x.txt")), ".jsonl or .csv"),
        ((str(root / "a-front1.jpg"), "--out", out), "folder of images or a manifest"),
        ((str(tmp_path / "latin1.csv"), "--out", out), "not UTF-8"),
        ((str(tmp_path / "columns.csv"), "--out", out), "no file, path or url column"),
        ((str(root), "--out", out, "--detect", "sparkle"), "unknown alert"),
        ((str(root), "--out", out, "--processes", "0"), "--processes"),
        ((str(root), "--out", out, "--server", "http://127.0.0.1:9"), "--project-id"),
        ((str(root), "--out", str(tmp_path / "other.csv")), "columns"),
    ]
    for args, message in cases:
        proc = run_batch(*args, cwd=tmp_path, env={"IDCARD_BATCH_TOKEN": ""})
        assert proc.returncode == 2, (args, proc.stderr)
        no_trace(proc)
        assert message in proc.stderr, (args, proc.stderr)
        assert proc.stdout == ""
    assert not (tmp_path / "x.jsonl").exists()
    assert (tmp_path / "other.csv").read_text(encoding="utf-8") == "something,else\n1,2\n"
    proc = run_batch("--out", out, cwd=tmp_path)  # argparse: INPUT missing
    assert proc.returncode == 2 and "INPUT" in proc.stderr
