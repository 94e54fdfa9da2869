"""What the live-API tests share: a throwaway PostgreSQL database, the API served by
uvicorn on a free port with the real worker's job runner in process, two projects, and
an httpx client per project. The fixtures are registered for every integration module
by ``conftest.py``; module-scoped, so each test module gets its own database and server.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from api.app import create_app
from api.dispatch import InProcessDispatcher
from idcard.cli import embedded_runner
from idcard.db import session_scope
from idcard.migrate import upgrade
from idcard.projects import create_project
from idcard.settings import get_settings

from .live_server import HoldingDispatcher, serve_in_thread

SEED = 1  # a clean front that reads perfectly (tests/unit/test_engine.py: CLEAN)
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def api_database(postgres_admin_url: str) -> Iterator[str]:
    """A throwaway PostgreSQL database, and the environment pointing at it."""
    from .conftest import TEST_SECRET_KEY, throwaway_postgres  # conftest imports this module

    with throwaway_postgres(postgres_admin_url) as url:
        upgrade(url)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("IDCARD_DATABASE_URL", url)
            mp.setenv("IDCARD_SECRET_KEY", TEST_SECRET_KEY)
            mp.delenv("IDCARD_EMBEDDED", raising=False)
            get_settings.cache_clear()
            yield url
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def dispatcher(api_database: str) -> Iterator[HoldingDispatcher]:
    stop = threading.Event()
    held = HoldingDispatcher(InProcessDispatcher(embedded_runner(stop)))
    yield held
    stop.set()
    held.close()


@pytest.fixture(scope="module")
def server(api_database: str, dispatcher: HoldingDispatcher) -> Iterator[str]:
    with serve_in_thread(create_app(get_settings(), dispatcher)) as base:
        yield base


class Api:
    """One project's client of the live server."""

    def __init__(self, base: str, creds: dict[str, str]) -> None:
        self.creds = creds
        self.pid = creds["project_id"]
        self.http = httpx.Client(base_url=base, timeout=60,
                                 headers={"X-Auth-Token": creds["token"]})
        self.jobs = f"/v2/{self.pid}/ocr/id-card/jobs"
        self.batches = f"/v2/{self.pid}/ocr/id-card/batches"

    def sync(self, body: Any, **kw: Any) -> httpx.Response:
        return self.http.post(f"/v2/{self.pid}/ocr/id-card", json=body, **kw)

    def submit(self, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        # json.dumps escapes non-ASCII, so even a lone surrogate goes out as valid JSON.
        return self.http.post(self.jobs, content=json.dumps(body), headers=headers)

    def submitted(self, body: dict[str, Any]) -> str:
        r = self.submit(body)
        assert r.status_code == 202, r.text
        return r.json()["job_id"]

    def job(self, job_id: str) -> httpx.Response:
        return self.http.get(f"{self.jobs}/{job_id}")

    def wait(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            view = self.job(job_id).json()
            if view["status"] in TERMINAL:
                return view
            assert time.monotonic() < deadline, view
            time.sleep(0.1)


@pytest.fixture(scope="module")
def projects(api_database: str) -> dict[str, dict[str, str]]:
    with session_scope() as session:
        return {name: create_project(session, name) for name in ("bank-a", "bank-b")}


@pytest.fixture(scope="module")
def api(server: str, projects: dict[str, dict[str, str]]) -> Api:
    return Api(server, projects["bank-a"])


@pytest.fixture(scope="module")
def other(server: str, projects: dict[str, dict[str, str]]) -> Api:
    return Api(server, projects["bank-b"])


@pytest.fixture
def fresh(server: str, api_database: str) -> Api:
    """A project of its own, for tests that count jobs."""
    with session_scope() as session:
        return Api(server, create_project(session, "counting"))


@contextmanager
def held(dispatcher: HoldingDispatcher) -> Iterator[None]:
    dispatcher.hold()
    try:
        yield
    finally:
        dispatcher.release()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png(width: int, height: int, value: int = 255) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


TINY = b64(png(1, 1))  # fails fast in the worker: AIS.0103


@pytest.fixture(scope="module")
def card(make_case) -> Any:
    return make_case(SEED, "clean", "front")


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error_code", "error_msg"}, body
    assert body["error_code"] == code, body
    assert body["error_msg"] and "Traceback" not in body["error_msg"]
    return body
