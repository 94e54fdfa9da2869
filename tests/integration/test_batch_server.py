"""``idcard-ocr batch --server``: bulk jobs on the deployed service (``idcard-ocr serve``
and a real Celery worker on Redis and PostgreSQL, the ``service`` fixture of
``test_service_e2e``), resumed without duplicate jobs; and the client's handling of rate
limits and outages against a scripted HTTP server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from idcard.db import session_scope
from idcard.projects import create_project

from .test_service_e2e import Service, service  # noqa: F401 - the module's fixture
from .worker_support import local_server, send

CARDS = {"a-front1.jpg": (1, "front"), "b-back1.jpg": (1, "back"),
         "sub/c-front2.jpg": (2, "front")}
BROKEN = "z-broken.jpg"


def batch(*args: str) -> list[str]:
    return [sys.executable, "-m", "idcard.cli", "batch", *args]


def run(*args: str, cwd: Path, token: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "IDCARD_BATCH_TOKEN": token}
    return subprocess.run(batch(*args), cwd=cwd, env=env, capture_output=True, text=True,
                          encoding="utf-8", timeout=300)


def rows_of(path: Path) -> dict[str, dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    files = [r["file"] for r in rows]
    assert len(files) == len(set(files)), "an item was written twice"
    return {r["file"]: r["response"] for r in rows}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, photo_folder: Any
           ) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("server-batch") / "photos"
    return root, photo_folder(root, CARDS, (BROKEN, b"\x89PNG but no more"))


def new_project(name: str) -> dict[str, str]:
    # The service fixture points this process's settings at the service's database.
    with session_scope() as session:
        return create_project(session, name)


def jobs_of(svc: Service, creds: dict[str, str]) -> list[dict[str, Any]]:
    r = svc.http.get(f"/v2/{creds['project_id']}/ocr/id-card/jobs", params={"limit": 100},
                     headers={"X-Auth-Token": creds["token"]})
    assert r.status_code == 200, r.text
    return r.json()["jobs"]


def server_args(svc: Service, creds: dict[str, str]) -> tuple[str, ...]:
    return ("--server", str(svc.http.base_url), "--project-id", creds["project_id"])


def test_folder_and_a_url_through_the_service(service: Service, photos: Any,  # noqa: F811
                                              tmp_path: Path) -> None:
    root, expected = photos
    creds = new_project("nightly-a")
    card = root / "a-front1.jpg"
    service.hooks.routes["/scans/card.jpg"] = lambda h: send(
        h, 200, card.read_bytes(), {"Content-Type": "image/jpeg"})
    url = service.hooks.url("/scans/card.jpg")  # 127.0.0.1: allowed by the service env
    manifest = tmp_path / "items.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in [
        {"file": str(root / "b-back1.jpg"), "return_verification": True},
        {"url": url, "detect_blur": True},
        {"file": str(root / BROKEN)},
        {"file": "missing.jpg"},
    ]) + "\n", encoding="utf-8")

    out = tmp_path / "folder.jsonl"
    proc = run(str(root), "--out", str(out), *server_args(service, creds), cwd=tmp_path,
               token=creds["token"])  # the token from IDCARD_BATCH_TOKEN
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr  # the broken image
    rows = rows_of(out)
    assert set(rows) == {*expected, str(root / BROKEN)}
    for path, want in expected.items():
        assert rows[path] == {"result": want}  # exactly the local answer
    assert rows[str(root / BROKEN)]["error_code"] == "AIS.0102"
    summary = json.loads(proc.stdout)
    assert summary["mode"] == "server" and summary["in_flight"] == 32
    assert summary["status"] == {"ok": 3, "error": 1}
    assert summary["error_codes"] == {"AIS.0102": 1}
    jobs = jobs_of(service, creds)
    assert len(jobs) == 4
    assert {j["priority"] for j in jobs} == {"bulk"}

    out = tmp_path / "manifest.jsonl"
    proc = run(str(manifest), "--out", str(out), *server_args(service, creds),
               "--token", creds["token"], "--in-flight", "2", cwd=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr
    rows = rows_of(out)
    back = rows[str(root / "b-back1.jpg")]["result"]
    assert {k: back[k] for k in expected[str(root / "b-back1.jpg")]} == expected[
        str(root / "b-back1.jpg")]
    assert "verification_result" in back and "detect_blur_result" not in back
    by_url = rows[url]["result"]
    assert {k: by_url[k] for k in expected[str(card)]} == expected[str(card)]
    assert "detect_blur_result" in by_url and "verification_result" not in by_url
    assert rows[str(root / BROKEN)]["error_code"] == "AIS.0102"
    assert rows["missing.jpg"]["error_code"] == "IDC.0001"  # read by the client: no job
    # The broken image with the same options is the same job as in the folder run; the
    # back with return_verification is a new one, and so is the URL.
    assert len(jobs_of(service, creds)) == 6


def test_resumed_runs_never_duplicate_jobs(service: Service, photos: Any,  # noqa: F811
                                           tmp_path: Path) -> None:
    root, expected = photos
    creds = new_project("nightly-b")
    out = tmp_path / "nightly.jsonl"
    args = (str(root), "--out", str(out), *server_args(service, creds), "--verify")
    env = {**os.environ, "IDCARD_BATCH_TOKEN": creds["token"]}
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(batch(*args), cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # jobs were submitted and not all written
    proc.wait(30)
    first = rows_of(out)
    assert 1 <= len(first) < 4, "the kill came too late to test a resume"
    submitted = len(jobs_of(service, creds))
    assert submitted == 4  # every item was in flight (--in-flight 32)

    proc = run(*args, cwd=tmp_path, token=creds["token"])
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1
    rows = rows_of(out)  # each item exactly once
    assert set(rows) == {*expected, str(root / BROKEN)}
    for path, want in expected.items():
        got = rows[path]["result"]
        assert {k: got[k] for k in want} == want
    summary = json.loads(proc.stdout)
    assert summary["already_done"] == len(first)
    assert summary["processed"] == 4 - len(first)
    # The resumed run got its jobs back by their idempotency keys.
    assert len(jobs_of(service, creds)) == 4

    # Even from scratch (the output lost), the same items are the same jobs.
    again = tmp_path / "again.jsonl"
    proc = run(*args[:1], "--out", str(again), *args[3:], cwd=tmp_path,
               token=creds["token"])
    assert proc.returncode == 1, proc.stderr
    assert rows_of(again) == rows
    assert len(jobs_of(service, creds)) == 4


def test_refused_credentials_stop_the_run(service: Service, photos: Any,  # noqa: F811
                                          tmp_path: Path) -> None:
    root, _ = photos
    creds = new_project("nightly-c")
    out = tmp_path / "out.jsonl"
    proc = run(str(root), "--out", str(out), *server_args(service, creds),
               "--token", "not-the-token", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "APIGW.0301" in proc.stderr and "--token" in proc.stderr
    assert out.read_text(encoding="utf-8") == ""  # no item was answered
    assert jobs_of(service, creds) == []


# --- against a scripted server -----------------------------------------------------------

JOB_ID = "0" * 32


def test_rate_limits_and_outages_are_waited_out(tmp_path: Path, photos: Any) -> None:
    """429 with Retry-After pauses the client for that long; 503 and a lost connection
    are retried with backoff; every retry carries the same Idempotency-Key."""
    root, expected = photos
    card = root / "a-front1.jpg"
    manifest = tmp_path / "one.csv"
    manifest.write_text(f"file\n{card}\n", encoding="utf-8")
    submits: list[tuple[float, str, bytes]] = []
    polls: list[float] = []
    lock = threading.Lock()
    answer = {"result": expected[str(card)]}

    with local_server() as fake:
        def submit(h: Any) -> None:
            with lock:  # LocalServer has read and recorded the body already
                n = len(submits)
                submits.append((time.monotonic(), h.headers.get("Idempotency-Key"),
                                fake.received[-1].body))
            if n == 0:
                send(h, 429, b'{"error_code":"APIGW.0308","error_msg":"slow down"}',
                     {"Retry-After": "1", "Content-Type": "application/json"})
            elif n == 1:
                send(h, 503, b'{"error_code":"IDC.0503","error_msg":"not ready"}',
                     {"Content-Type": "application/json"})
            else:
                send(h, 202, json.dumps({"job_id": JOB_ID, "status": "queued"}).encode(),
                     {"Content-Type": "application/json"})

        def poll(h: Any) -> None:
            with lock:
                polls.append(time.monotonic())
                n = len(polls)
            view = {"job_id": JOB_ID, "status": "running" if n == 1 else "succeeded",
                    "result": None if n == 1 else answer, "error_code": None,
                    "error_msg": None}
            send(h, 200, json.dumps(view, ensure_ascii=False).encode(),
                 {"Content-Type": "application/json"})

        fake.routes["/v2/p1/ocr/id-card/jobs"] = submit
        fake.routes[f"/v2/p1/ocr/id-card/jobs/{JOB_ID}"] = poll
        out = tmp_path / "out.jsonl"
        proc = run(str(manifest), "--out", str(out), "--server", fake.url(""),
                   "--project-id", "p1", "--token", "t", "--side", "front", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert rows_of(out) == {str(card): answer}
    assert len(submits) == 3
    assert len({key for _, key, _ in submits}) == 1  # one item, one key
    assert submits[0][1].startswith("idcard-batch-")
    assert len({body for _, _, body in submits}) == 1
    body = json.loads(submits[0][2])
    assert body["priority"] == "bulk" and body["side"] == "front" and body["image"]
    assert submits[1][0] - submits[0][0] >= 0.95  # Retry-After: 1
    assert len(polls) == 2
    summary = json.loads(proc.stdout)
    assert summary["rate_limited"] == 1 and summary["retried"] == 1
    assert summary["status"] == {"ok": 1, "error": 0}


def test_a_server_that_is_not_the_api_stops_the_run(tmp_path: Path, photos: Any) -> None:
    root, _ = photos
    with local_server() as fake:  # answers 404, in plain text, to everything
        proc = run(str(root), "--out", str(tmp_path / "o.jsonl"), "--server",
                   fake.url(""), "--project-id", "p", "--token", "t", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "is --server the idcard-ocr API?" in proc.stderr
