"""Asynchronous jobs: submit, read, cancel, list, audit trail."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep, JsonBody, ServiceDep
from api.schemas import (
    ERROR_RESPONSES,
    IDEMPOTENCY_KEY_PATTERN,
    ErrorBody,
    JobCreated,
    JobEvents,
    JobList,
    JobRequest,
    JobView,
    job_created_view,
    parse_idempotency_key,
    parse_job_submission,
    parse_timestamp,
    request_body_doc,
)
from idcard.jobs import MAX_LIST_LIMIT
from idcard.models import JobStatus

router = APIRouter(prefix="/v2/{project_id}/ocr/id-card/jobs", tags=["jobs"])

@router.post(
    "", status_code=202, summary="Submit a recognition job",
    openapi_extra=request_body_doc(JobRequest),
    responses={202: {"model": JobCreated, "description": "accepted (also an idempotent "
                     "replay, marked by the header Idempotent-Replayed: true)"},
               409: {"model": ErrorBody, "description": "IDC.0409: Idempotency-Key "
                     "reused with another request"}, **ERROR_RESPONSES},
)
async def submit_job(
    caller: CallerDep, body: JsonBody, service: ServiceDep,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", description="1 to 200 printable ASCII characters",
        json_schema_extra={"pattern": IDEMPOTENCY_KEY_PATTERN})] = None,
) -> JSONResponse:
    key = parse_idempotency_key(idempotency_key)
    submission = await run_in_threadpool(parse_job_submission, body)
    job, created = await run_in_threadpool(service.submit, submission, key)
    headers = {} if created else {"Idempotent-Replayed": "true"}
    return JSONResponse(job_created_view(job), status_code=202, headers=headers)


@router.get("", summary="List jobs, newest first", response_model=None,
            responses={200: {"model": JobList}, **ERROR_RESPONSES})
def list_jobs(
    caller: CallerDep, service: ServiceDep,
    status: Annotated[str | None, Query(
        description="queued, running, succeeded, failed or cancelled",
        json_schema_extra={"enum": [s.value for s in JobStatus]})] = None,
    created_after: Annotated[str | None, Query(
        description="ISO-8601, inclusive", json_schema_extra={"format": "date-time"})] = None,
    created_before: Annotated[str | None, Query(
        description="ISO-8601, exclusive", json_schema_extra={"format": "date-time"})] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")
                      ] = None,
) -> dict[str, Any]:
    return service.list_page(
        status=status or None, limit=limit, cursor=cursor or None,
        created_after=parse_timestamp(created_after, "created_after"),
        created_before=parse_timestamp(created_before, "created_before"),
    )


@router.get("/{job_id}", summary="A job, with its result once it succeeded",
            response_model=None, responses={200: {"model": JobView}, **ERROR_RESPONSES})
def get_job(caller: CallerDep, service: ServiceDep, job_id: str) -> dict[str, Any]:
    return service.get(job_id)


@router.delete("/{job_id}", summary="Cancel a job that has not started",
               response_model=None,
               responses={200: {"model": JobView}, 409: {"model": ErrorBody, "description":
                          "IDC.0410: the job has already started"}, **ERROR_RESPONSES})
def cancel_job(caller: CallerDep, service: ServiceDep, job_id: str) -> dict[str, Any]:
    return service.cancel(job_id)


@router.get("/{job_id}/events", summary="The audit trail of a job", response_model=None,
            responses={200: {"model": JobEvents}, **ERROR_RESPONSES})
def job_events(caller: CallerDep, service: ServiceDep, job_id: str) -> dict[str, Any]:
    return service.events(job_id)
