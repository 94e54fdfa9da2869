"""Personal data never reaches the logs.

Every logger at DEBUG (the API's, the in-process worker's, uvicorn's access and error
logs, SQLAlchemy's statements and parameters) plus stdout/stderr are captured while
the live API reads a card synchronously (token and AK/SK), as an async job from a URL
with a webhook, and refuses a few bad requests that carry personal data. The capture is
then searched for the card's name, number and address, the image's base64 and the
URL's path: none may appear.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.app import create_app
from idcard.settings import get_settings

from .api_support import Api, b64
from .live_server import HoldingDispatcher, serve_in_thread, wait_until
from .test_sdk_auth import SignedCall
from .worker_support import LocalServer, send


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.names: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.names.add(record.name)
        self.lines.append(self.format(record))  # with any traceback's text


# The worker silences these on purpose (their request lines name URLs); the test checks
# that they stay silenced rather than turning them on.
SILENCED = ("httpx", "httpcore")
# Loggers that libraries keep quiet or private by default, turned on here.
LOUD = ("uvicorn", "uvicorn.access", "uvicorn.error", "uvicorn.asgi", "sqlalchemy",
        "sqlalchemy.engine", "sqlalchemy.pool", "redis", "PIL", "asyncio")


@pytest.fixture
def debug_logs() -> Iterator[Capture]:
    """Every logger at DEBUG into one capture (uvicorn's propagate too), but SILENCED."""
    root = logging.getLogger()
    capture = Capture()
    manager = logging.Logger.manager
    names = set(LOUD) | {n for n, x in manager.loggerDict.items()
                         if isinstance(x, logging.Logger)}
    loggers = [logging.getLogger(n) for n in names
               if not any(n == q or n.startswith(q + ".") for q in SILENCED)]
    saved = [(x, x.level, x.propagate, x.disabled) for x in loggers]
    saved_root = root.level
    for x in loggers:
        x.setLevel(logging.NOTSET)
        x.propagate, x.disabled = True, False
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(saved_root)
        for x, level, propagate, disabled in saved:
            x.setLevel(level)
            x.propagate, x.disabled = propagate, disabled


def test_no_personal_data_in_any_log(
    api: Api, api_database: str, dispatcher: HoldingDispatcher, card: Any,
    debug_logs: Capture, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDCARD_URL_ALLOW_HOSTS", "127.0.0.1")  # the image and hook server
    get_settings.cache_clear()
    image = b64(card.image_bytes)
    number, name, address = (card.expected[k] for k in ("number", "name", "address"))
    photo_path = f"/kyc/{number}/photo.jpg"
    missing_path = f"/kyc/{number}/missing.jpg"

    # A separate server: uvicorn's own loggers (access log included) at DEBUG.
    app = create_app(get_settings(), dispatcher)
    with LocalServer() as files, serve_in_thread(app, log_level="debug", log_config=None,
                                                 access_log=True) as base:
        files.routes[photo_path] = lambda h: send(h, 200, card.image_bytes,
                                                  {"Content-Type": "image/jpeg"})
        files.routes["/hook"] = lambda h: send(h, 204)
        http = httpx.Client(base_url=base, timeout=60,
                            headers={"X-Auth-Token": api.creds["token"]})
        sync = f"/v2/{api.pid}/ocr/id-card"

        r = http.post(sync, json={"image": image, "return_verification": True})
        assert r.status_code == 200 and r.json()["result"]["number"] == number
        signed = SignedCall(base, "POST", sync, ak=api.creds["ak"], sk=api.creds["sk"],
                            body=json.dumps({"image": image}).encode()).send()
        assert signed.status_code == 200 and signed.json()["result"]["name"] == name

        job = http.post(f"{sync}/jobs", json={"url": files.url(photo_path),
                                              "callback_url": files.url("/hook"),
                                              "client_reference": "log-scan"})
        assert job.status_code == 202, job.text
        job_id = job.json()["job_id"]
        wait_until(lambda: any(x.path == "/hook" for x in files.received), 60,
                   "no webhook")
        view = http.get(f"{sync}/jobs/{job_id}").json()
        assert view["status"] == "succeeded" and view["result"]["result"]["number"] == number

        # Failures that carry personal data in the request.
        assert http.post(sync, json={"image": f"{name}{number}"}).status_code == 400
        assert http.post(sync, json={"image": image, "side": address}).status_code == 400
        assert http.post(sync, json={"image": image, "return_verification": number}
                         ).status_code == 400
        failed = http.post(sync, json={"url": files.url(missing_path)})
        assert failed.json()["error_code"] == "IDC.0201"
        assert http.post(sync, content=f'{{"image": "{name}"'.encode(),
                         headers={"Content-Type": "application/json"}).status_code == 400
        hook = next(x for x in files.received if x.path == "/hook")
        assert number in hook.body.decode()  # the webhook itself does carry the result
    get_settings.cache_clear()
    logging.getLogger("tests.control").debug("control line %s", "c0ntr0l")

    out, err = capfd.readouterr()
    text = "\n".join(debug_logs.lines) + "\n" + out + "\n" + err
    # The capture really saw everything: the server's access log, SQL, the worker.
    assert {"uvicorn.access", "uvicorn.error", "sqlalchemy.engine.Engine"} <= debug_logs.names
    assert f"POST /v2/{api.pid}/ocr/id-card/jobs" in text
    assert "INSERT INTO jobs" in text and job_id in text and "control line c0ntr0l" in text
    # httpx and httpcore (the worker's downloads and webhooks) are silenced on purpose:
    # request lines name URLs.
    for quiet in SILENCED:
        assert logging.getLogger(quiet).getEffectiveLevel() >= logging.WARNING

    needles = {
        "name": name, "number": number, "number without check digit": number[:17],
        "address": address, "start of the address": address[:8],
        "image base64": image[:40], "image base64 (middle)": image[5000:5040],
        "URL path": f"/kyc/{number}", "URL file": "photo.jpg",
        # Nor credentials: the SK is stored encrypted, the token as a keyed hash.
        "SK": api.creds["sk"], "token": api.creds["token"],
        "webhook secret": api.creds["webhook_secret"],
    }
    leaks = {what: text.count(value) for what, value in needles.items() if value in text}
    assert not leaks, leaks
