"""Liveness, readiness and metrics: no authentication (keep them on the internal
network; they carry counts, never personal data)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Response
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api.deps import DispatcherDep, MetricsDep, SettingsDep
from api.dispatch import Dispatcher
from api.metrics import CONTENT_TYPE
from idcard.db import new_session
from idcard.errors import ErrorCode, ServiceError

router = APIRouter(tags=["health"])

READY_TIMEOUT_SECONDS = 5.0


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _database_ok(database_url: str) -> bool:
    try:
        with new_session(database_url) as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means: not ready
        return False


def _broker_ok(dispatcher: Dispatcher) -> bool:
    try:
        return bool(dispatcher.ready())
    except Exception:  # noqa: BLE001 - any failure means: not ready
        return False


@router.get("/readyz", summary="Readiness: database and broker reachable",
            responses={503: {"description": "IDC.0503"}})
async def readyz(settings: SettingsDep, dispatcher: DispatcherDep) -> dict[str, str]:
    database = broker = False
    # A black-holed host must not hang the probe: give up and answer 503.
    with anyio.move_on_after(READY_TIMEOUT_SECONDS):
        database = await anyio.to_thread.run_sync(_database_ok, settings.database_url,
                                                  abandon_on_cancel=True)
        broker = await anyio.to_thread.run_sync(_broker_ok, dispatcher,
                                                abandon_on_cancel=True)
    if not (database and broker):
        down = [name for name, ok in (("database", database), ("broker", broker)) if not ok]
        raise ServiceError(ErrorCode.NOT_READY, f"not ready: {' and '.join(down)} unavailable")
    return {"status": "ready", "database": "ok", "broker": "ok"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    # Counting jobs queries the database: off the event loop.
    return Response(await run_in_threadpool(metrics.render), media_type=CONTENT_TYPE)
