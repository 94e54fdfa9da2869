"""``idcard-ocr serve --embedded`` as a laptop user runs it: one process, a SQLite file,
no Redis, no IDCARD_SECRET_KEY; migrations applied on start, jobs left queued by a
previous run picked up again."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .live_server import ROOT, free_port, serve_in_subprocess


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "idcard.cli", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCARD_")}
    env.update({
        "IDCARD_DATABASE_URL": f"sqlite:///{tmp_path / 'idcard.sqlite3'}",
        # Nothing listens here: embedded mode must not need Redis at all.
        "IDCARD_REDIS_URL": "redis://127.0.0.1:1/0",
        "IDCARD_EMBEDDED": "1",  # `projects create` shares the embedded dev key
    })
    return env


def _wait(http: httpx.Client, path: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (view := http.get(path).json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, view
        time.sleep(0.1)
    return view


def test_embedded_serve_on_sqlite_without_redis(
    embedded_env: dict[str, str], tmp_path: Path, make_case, monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = make_case(1, "clean", "front")
    image = base64.b64encode(card.image_bytes).decode()
    port = free_port()
    serve = [sys.executable, "-m", "idcard.cli", "serve", "--embedded", "--port", str(port),
             "--log-level", "warning"]

    with serve_in_subprocess(serve, embedded_env, port, tmp_path / "api.log") as base:
        creds = json.loads(_cli(embedded_env, "projects", "create", "laptop"))
        pid = creds["project_id"]
        with httpx.Client(base_url=base, timeout=120,
                          headers={"X-Auth-Token": creds["token"]}) as http:
            assert http.get("/readyz").status_code == 200
            r = http.post(f"/v2/{pid}/ocr/id-card", json={"image": image})
            assert r.status_code == 200, r.text
            assert r.json() == {"result": card.expected}

            r = http.post(f"/v2/{pid}/ocr/id-card/jobs", json={"image": image})
            assert r.status_code == 202, r.text
            view = _wait(http, r.json()["status_url"])
            assert view["status"] == "succeeded"
            assert view["result"] == {"result": card.expected}

    # A job left queued while no server runs (the process died with it in its pool) is
    # handed to the pools by the next start.
    job_id = _queued_job(embedded_env, pid, monkeypatch)
    with serve_in_subprocess(serve, embedded_env, port, tmp_path / "api2.log") as base, \
            httpx.Client(base_url=base, timeout=60,
                         headers={"X-Auth-Token": creds["token"]}) as http:
        view = _wait(http, f"/v2/{pid}/ocr/id-card/jobs/{job_id}")
        assert view["error_code"] == "AIS.0102", view


def _queued_job(env: dict[str, str], project_id: str, monkeypatch: pytest.MonkeyPatch) -> str:
    from idcard.db import session_scope
    from idcard.jobs import create_job
    from idcard.options import RecognitionOptions
    from idcard.settings import get_settings

    for key in ("IDCARD_DATABASE_URL", "IDCARD_EMBEDDED"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("IDCARD_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    try:
        with session_scope() as session:
            job, _ = create_job(session, project_id, RecognitionOptions(),
                                image=b"\x00junk", actor="test:setup")
            return job.id
    finally:
        get_settings.cache_clear()
