"""What routes get injected: settings, a database session, the caller, the JSON body,
the dispatcher and the job service built from them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import Caller, authenticate
from api.body import json_object_body, read_limited_body, require_json_content_type
from api.dispatch import Dispatcher
from api.metrics import ApiMetrics
from api.ratelimit import RateLimiter, RateLimitExceeded
from api.ratelimit import check as check_rate_limit
from api.replay import ReplayGuard, default_replay_guard
from api.service import JobService
from idcard.db import new_session
from idcard.settings import Settings

# The dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` one on
# the thread pool, a hand-over (and a wake-up on a busy machine) per dependency.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


async def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]


async def get_session(settings: SettingsDep) -> AsyncIterator[Session]:
    """One transaction per request, committed before the response is sent (scope
    'function'), rolled back on any error.

    Creating a session does no I/O, so only the end goes to the thread pool, and only
    when a transaction is open (a route that committed its own work skips that trip).
    """
    session = new_session(settings.database_url)
    try:
        yield session
        if session.in_transaction():
            await run_in_threadpool(session.commit)
    except BaseException:
        if session.in_transaction():
            await anyio.to_thread.run_sync(session.rollback, abandon_on_cancel=False)
        raise
    finally:
        session.close()  # the transaction has ended: no connection is held


SessionDep = Annotated[Session, Depends(get_session, scope="function")]

ProjectId = Annotated[str, Path(description="the project the credential belongs to")]


async def get_rate_limiter(request: Request) -> RateLimiter:
    return request.app.state.rate_limiter


RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]

_UNSET = object()


async def get_replay_guard(request: Request) -> ReplayGuard | None:
    """The app's replay guard, made on first use from its settings, inside the server's
    event loop (its Redis client belongs to that loop; a test may set
    ``app.state.replay_guard`` first); None when replay protection is off."""
    state = request.app.state
    guard = getattr(state, "replay_guard", _UNSET)
    if guard is _UNSET:  # async, so on the loop: no other request makes one meanwhile
        guard = state.replay_guard = default_replay_guard(state.settings)
    return guard  # type: ignore[return-value]


ReplayGuardDep = Annotated[ReplayGuard | None, Depends(get_replay_guard)]


def _body_limit(request: Request, settings: Settings) -> int:
    route = getattr(request.scope.get("route"), "path", "")
    return (settings.batch_max_body_bytes if route.endswith("/batches")
            else settings.api_max_body_bytes)


async def current_caller(request: Request, project_id: ProjectId, session: SessionDep,
                         settings: SettingsDep, limiter: RateLimiterDep,
                         replay_guard: ReplayGuardDep) -> Caller:
    """The authenticated caller, within its project's rate limit (``APIGW.0301``,
    ``APIGW.0308``). Only authenticated requests count against a project's limit."""

    def commit_and_count(caller: Caller) -> None:
        # End the transaction now: no connection (nor SQLite's write lock) is held while
        # a large body is still being uploaded. In the credential check's trip to the
        # thread pool (authenticate's ``then``).
        session.commit()
        limit = caller.project.rate_limit_per_minute
        if limit is None:
            limit = settings.rate_limit_per_minute
        if limit > 0:
            check_rate_limit(limiter, caller.project.id, limit)

    try:
        return await authenticate(request, session, project_id,
                                  body_limit=_body_limit(request, settings),
                                  replay_guard=replay_guard, then=commit_and_count)
    except RateLimitExceeded:
        # Refused before it did anything: the same signed request may come again after
        # Retry-After (HTTP clients resend a 429 unchanged). Only a signed request that
        # passed its checks has claimed a replay key (request.state, see api.auth).
        key = getattr(request.state, "replay_key", None)
        if replay_guard is not None and key is not None:
            await replay_guard.release(key)
        raise


CallerDep = Annotated[Caller, Depends(current_caller)]


async def json_body(request: Request, settings: SettingsDep) -> dict[str, Any]:
    return await json_object_body(request, settings.api_max_body_bytes)


async def raw_json_body(request: Request, settings: SettingsDep) -> bytes:
    """The body unparsed (JSON content type and size checked): for a route that parses
    it in a trip to the thread pool it makes anyway (``api.body.parse_json_object``)."""
    require_json_content_type(request)
    return await read_limited_body(request, settings.api_max_body_bytes)


async def batch_json_body(request: Request, settings: SettingsDep) -> dict[str, Any]:
    return await json_object_body(request, settings.batch_max_body_bytes)


# Declared after CallerDep in a route's signature: the credential is checked before a
# byte of a (possibly 14 MB) body is read.
JsonBody = Annotated[dict[str, Any], Depends(json_body)]
RawJsonBody = Annotated[bytes, Depends(raw_json_body)]
BatchJsonBody = Annotated[dict[str, Any], Depends(batch_json_body)]


async def job_service(
    request: Request, caller: CallerDep, session: SessionDep, dispatcher: DispatcherDep,
    settings: SettingsDep, metrics: MetricsDep,
) -> JobService:
    return JobService(
        session=session, dispatcher=dispatcher, settings=settings,
        project_id=caller.project.id, actor=caller.actor, metrics=metrics,
        wait_limiter=request.app.state.wait_limiter,
    )


ServiceDep = Annotated[JobService, Depends(job_service)]
