"""Server mode: each item becomes an asynchronous job on the bulk queue of a running
service, polled until it ends; at most ``in_flight`` jobs are out at once.

Every submission carries an ``Idempotency-Key`` derived from the item (its key, the
SHA-256 of the file's bytes or the URL, and its options), so a run that is resumed after
a crash gets the jobs it had already created back instead of creating them again.

Rate limits (429 ``APIGW.0308``) pause every request for the ``Retry-After`` seconds;
an unavailable service (503, 502, 504, a refused connection) is retried with
exponential backoff, and the run gives up when nothing has worked for
``UNAVAILABLE_GIVE_UP_SECONDS``. Wrong credentials or a wrong server URL stop the run
at once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idcard.errors import ErrorCode, ServiceError

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
POLL_FIRST_SECONDS = 0.5
POLL_MAX_SECONDS = 5.0
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
UNAVAILABLE_GIVE_UP_SECONDS = 600.0
_UNAVAILABLE = frozenset({502, 503, 504})
USER_AGENT = "idcard-ocr-batch/1"


class ServerAbort(Exception):
    """The run cannot go on against this server (credentials, URL, a long outage)."""


@dataclass(frozen=True)
class ServerTask:
    key: str
    fields: dict[str, Any]  # the item's request options, already validated
    path: Path | None = None
    url: str | None = None


Done = Callable[[str, dict[str, Any]], None]


def idempotency_key(task: ServerTask, content_sha256: str | None) -> str:
    """The same item (key, bytes or URL, options) always gives the same key."""
    ident = json.dumps({"file": task.key, "sha256": content_sha256, "url": task.url,
                        "options": task.fields}, sort_keys=True, ensure_ascii=True)
    return "idcard-batch-" + hashlib.sha256(ident.encode()).hexdigest()


def response_of(view: dict[str, Any]) -> dict[str, Any]:
    """The item's response from an ended job: what the sync route would have answered."""
    status = view.get("status")
    if status == "succeeded":
        if isinstance(view.get("result"), dict):
            return view["result"]
        return ServiceError(ErrorCode.JOB_NOT_FOUND, "the job's result is no longer "
                            "kept (IDCARD_RESULT_RETENTION_HOURS)").to_body()
    if status == "cancelled":
        return ServiceError(ErrorCode.JOB_CANCELLED,
                            "the job was cancelled on the server").to_body()
    return {"error_code": view.get("error_code") or ErrorCode.RECOGNITION_FAILED.value,
            "error_msg": view.get("error_msg") or "recognition failed"}


def _error_body(response: Any) -> dict[str, str] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error_code"), str):
        return {"error_code": body["error_code"], "error_msg": str(body.get("error_msg", ""))}
    return None


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ServerAbort(f"unexpected answer from the server (HTTP {response.status_code}, "
                          "not a JSON object): is --server the idcard-ocr API?")
    return body


def _retry_after(response: Any, default: float) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return default


class ServerRunner:
    def __init__(self, server: str, project_id: str, token: str, in_flight: int) -> None:
        self.base = server.rstrip("/")
        self.jobs = f"/v2/{project_id}/ocr/id-card/jobs"
        self.token = token
        self.in_flight = in_flight
        self.rate_limited = 0  # 429s met, for the summary
        self.retried = 0  # unavailable answers and connection failures retried
        self._paused_until = 0.0
        self._failing_since: float | None = None

    def run(self, tasks: Iterable[ServerTask], done: Done) -> None:
        """Submit and poll every task, calling ``done`` as each ends. Raises
        ``ServerAbort``; KeyboardInterrupt stops at once (the jobs go on on the server
        and a resumed run picks them up by their idempotency keys)."""
        asyncio.run(self._run(tasks, done))

    async def _run(self, tasks: Iterable[ServerTask], done: Done) -> None:
        import httpx

        limits = httpx.Limits(max_connections=min(self.in_flight, 32),
                              max_keepalive_connections=min(self.in_flight, 32))
        running: dict[asyncio.Task, ServerTask] = {}
        async with httpx.AsyncClient(
            base_url=self.base, timeout=httpx.Timeout(120.0, connect=10.0), limits=limits,
            headers={"X-Auth-Token": self.token, "User-Agent": USER_AGENT},
        ) as self._http:
            try:
                for task in tasks:
                    while len(running) >= self.in_flight:
                        await self._collect(running, done)
                    running[asyncio.create_task(self._one(task))] = task
                while running:
                    await self._collect(running, done)
            finally:
                for t in running:
                    t.cancel()
                await asyncio.gather(*running, return_exceptions=True)

    async def _collect(self, running: dict[asyncio.Task, ServerTask], done: Done) -> None:
        finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        for t in finished:
            task = running.pop(t)
            done(task.key, t.result())  # ServerAbort goes on up from here

    async def _one(self, task: ServerTask) -> dict[str, Any]:
        body: dict[str, Any] = {**task.fields, "priority": "bulk"}
        if task.path is not None:
            try:
                data = await asyncio.to_thread(task.path.read_bytes)
            except OSError as exc:
                return ServiceError(ErrorCode.FILE_UNREADABLE,
                                    f"cannot read file: {exc.strerror}").to_body()
            key = idempotency_key(task, hashlib.sha256(data).hexdigest())
            body["image"] = base64.b64encode(data).decode("ascii")
            del data
        else:
            key = idempotency_key(task, None)
            body["url"] = task.url
        r = await self._call("POST", self.jobs, json=body, headers={"Idempotency-Key": key})
        del body
        if r.status_code != 202:
            return self._item_error(r)
        job_id = _json(r).get("job_id")
        if not isinstance(job_id, str):
            raise ServerAbort("unexpected answer from the server: no job_id in HTTP 202")
        job = f"{self.jobs}/{job_id}"
        interval = POLL_FIRST_SECONDS
        while True:
            await asyncio.sleep(interval)
            r = await self._call("GET", job)
            if r.status_code != 200:
                return self._item_error(r)
            view = _json(r)
            if view.get("status") in TERMINAL:
                return response_of(view)
            interval = min(interval * 1.5, POLL_MAX_SECONDS)

    def _item_error(self, r: Any) -> dict[str, str]:
        error = _error_body(r)
        if r.status_code == 401:
            raise ServerAbort("the server refused the credentials "
                              f"({error['error_code'] if error else 'HTTP 401'}): check "
                              "--project-id and --token (or IDCARD_BATCH_TOKEN)")
        if error is None or (r.status_code == 404
                             and error["error_code"] == ErrorCode.NO_SUCH_API.value):
            raise ServerAbort(f"unexpected answer from the server (HTTP {r.status_code}): "
                              "is --server the idcard-ocr API?")
        return error

    async def _call(self, method: str, url: str, **kw: Any) -> Any:
        """One request, retried through rate limits and outages."""
        import httpx

        backoff = BACKOFF_FIRST_SECONDS
        while True:
            wait_for = self._paused_until - time.monotonic()
            if wait_for > 0:
                await asyncio.sleep(wait_for)
            try:
                r = await self._http.request(method, url, **kw)
            except httpx.TransportError:
                r = None
            if r is not None and r.status_code == 429:
                self.rate_limited += 1
                self._pause(_retry_after(r, BACKOFF_FIRST_SECONDS))
                continue
            if r is not None and r.status_code not in _UNAVAILABLE:
                self._failing_since = None
                return r
            self.retried += 1
            now = time.monotonic()
            self._failing_since = self._failing_since or now
            if now - self._failing_since > UNAVAILABLE_GIVE_UP_SECONDS:
                what = "cannot be reached" if r is None else f"answers HTTP {r.status_code}"
                raise ServerAbort(f"the server {what} for over "
                                  f"{UNAVAILABLE_GIVE_UP_SECONDS:.0f} s")
            delay = backoff * random.uniform(0.5, 1.0)  # jitter: in-flight items spread
            if r is not None and "Retry-After" in r.headers:
                delay = max(delay, _retry_after(r, delay))
            self._pause(delay)
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    def _pause(self, seconds: float) -> None:
        # Everyone waits: hammering a rate-limited or unavailable service helps nobody.
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
