"""Batches: many items in one call for bulk reprocessing; counts; JSON Lines results."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import BatchJsonBody, CallerDep, ServiceDep, SettingsDep
from api.schemas import (
    ERROR_RESPONSES,
    BatchCreated,
    BatchRequest,
    BatchView,
    parse_batch,
    request_body_doc,
)

router = APIRouter(prefix="/v2/{project_id}/ocr/id-card/batches", tags=["batches"])


@router.post(
    "", status_code=202, summary="Submit many items at once",
    openapi_extra=request_body_doc(BatchRequest),
    responses={202: {"model": BatchCreated}, **ERROR_RESPONSES},
)
async def submit_batch(
    caller: CallerDep, body: BatchJsonBody, service: ServiceDep, settings: SettingsDep,
) -> JSONResponse:
    submission = await run_in_threadpool(parse_batch, body, settings.batch_max_items)
    created = await run_in_threadpool(service.submit_batch, submission)
    return JSONResponse(created, status_code=202)


@router.get("/{batch_id}", summary="Counts of a batch's jobs by status",
            response_model=None, responses={200: {"model": BatchView}, **ERROR_RESPONSES})
def get_batch(caller: CallerDep, service: ServiceDep, batch_id: str) -> dict[str, Any]:
    return service.batch(batch_id)


@router.get(
    "/{batch_id}/results", summary="One JSON line per item, in submission order",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description":
                     '{"job_id", "client_reference", "status", "response"} per line; '
                     "response is the sync route's body (result or error), null while "
                     "the job has not ended"}, **ERROR_RESPONSES},
)
def batch_results(caller: CallerDep, service: ServiceDep, batch_id: str
                  ) -> StreamingResponse:
    return StreamingResponse(service.batch_result_lines(batch_id),
                             media_type="application/x-ndjson")
