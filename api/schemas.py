"""Request bodies in, response bodies out.

Request bodies are validated by hand, with the vendor's semantics and error codes (a
flag that is not a JSON boolean is ``AIS.0101``, ``side: ""`` means automatic, unknown
keys are ignored); the pydantic models at the end only document them in OpenAPI, and
are derived from the same list of flags (``idcard.options.FLAGS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, create_model

from idcard.b64 import decode_image_b64
from idcard.batches import BatchItem
from idcard.errors import ErrorCode, ServiceError
from idcard.models import Job, JobEvent, JobStatus, Priority, WebhookDelivery, WebhookState
from idcard.options import FLAGS, SIDES, RecognitionOptions

MAX_URL_CHARS = 4096
MAX_CALLBACK_URL_CHARS = 2048  # the column's size
MAX_CLIENT_REFERENCE_CHARS = 128
MAX_IDEMPOTENCY_KEY_CHARS = 200
OPTION_KEYS = ("side", *FLAGS)


def _invalid(message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_PARAMETER, message)


def _at(where: str, exc: ServiceError) -> ServiceError:
    return ServiceError(exc.code, f"{where}: {exc.message}") if where else exc


def _optional_text(body: dict[str, Any], name: str, max_chars: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string")
    if len(value) > max_chars:
        raise _invalid(f"{name} is longer than {max_chars} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON, not text
        raise _invalid(f"{name} is not valid text") from None
    return value


def _http_url(value: str, name: str, code: ErrorCode) -> str:
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise _invalid(f"{name} must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise _invalid(f"{name} is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ServiceError(code, f"{name} must be an http or https URL")
    return value


# --- requests -------------------------------------------------------------------------


@dataclass(frozen=True)
class RecognitionInput:
    """One image to read: ``image`` bytes xor ``url``, and what to read from it."""

    options: RecognitionOptions
    image: bytes | None = None
    url: str | None = None


@dataclass(frozen=True)
class JobSubmission:
    input: RecognitionInput
    priority: Priority
    callback_url: str | None
    client_reference: str | None


@dataclass(frozen=True)
class BatchSubmission:
    items: list[BatchItem]
    options: RecognitionOptions
    priority: Priority
    callback_url: str | None
    client_reference: str | None


def parse_options(body: dict[str, Any]) -> RecognitionOptions:
    return RecognitionOptions.from_request(body)


def parse_recognition(body: dict[str, Any], *, where: str = "",
                      defaults: dict[str, Any] | None = None) -> RecognitionInput:
    """The body of the synchronous route (vendor document, table 3).

    Checks in order of cost: image xor url, the options, then the base64 itself.
    ``defaults`` are option fields (a batch's) that the body's own override.
    """
    try:
        image, url = body.get("image"), body.get("url")
        if (image is None) == (url is None):
            raise _invalid("exactly one of image and url is required")
        options = parse_options({**(defaults or {}), **_option_fields(body)})
        if url is not None:
            url = _optional_text(body, "url", MAX_URL_CHARS)
            if not url:
                raise _invalid("url must not be empty")
            # Only the form here; the fetcher checks where it points when it downloads.
            return RecognitionInput(options=options,
                                    url=_http_url(url, "url", ErrorCode.URL_REFUSED))
        return RecognitionInput(options=options, image=decode_image_b64(image))
    except ServiceError as exc:
        raise _at(where, exc) from None


def _option_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in OPTION_KEYS if body.get(k) is not None}


def parse_priority(body: dict[str, Any], default: Priority) -> Priority:
    value = body.get("priority")
    if value is None:
        return default
    if not isinstance(value, str) or value not in {p.value for p in Priority}:
        raise _invalid("priority must be interactive or bulk")
    return Priority(value)


def parse_callback_url(body: dict[str, Any]) -> str | None:
    url = _optional_text(body, "callback_url", MAX_CALLBACK_URL_CHARS)
    if url is None:
        return None
    return _http_url(url, "callback_url", ErrorCode.INVALID_PARAMETER)


def parse_job_submission(body: dict[str, Any]) -> JobSubmission:
    return JobSubmission(
        input=parse_recognition(body),
        priority=parse_priority(body, Priority.INTERACTIVE),
        callback_url=parse_callback_url(body),
        client_reference=_optional_text(body, "client_reference",
                                        MAX_CLIENT_REFERENCE_CHARS),
    )


IDEMPOTENCY_KEY_PATTERN = f"^[!-~]{{1,{MAX_IDEMPOTENCY_KEY_CHARS}}}$"


def parse_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_CHARS or not all(
        "\x21" <= c <= "\x7e" for c in value
    ):
        raise _invalid(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} "
                       "printable ASCII characters without spaces")
    return value


def parse_batch(body: dict[str, Any], max_items: int) -> BatchSubmission:
    """A batch: ``items`` (each like a sync body, plus ``client_reference``) and the
    option fields shared by every item, which an item's own fields override."""
    items = body.get("items")
    if not isinstance(items, list) or not items:
        raise _invalid("items must be a non-empty array")
    if len(items) > max_items:
        raise _invalid(f"a batch holds at most {max_items} items")
    shared = _option_fields(body)
    options = parse_options(shared)
    parsed = []
    for index, item in enumerate(items):
        where = f"items[{index}]"
        if not isinstance(item, dict):
            raise _invalid(f"{where}: must be an object")
        rec = parse_recognition(item, where=where, defaults=shared)
        try:
            reference = _optional_text(item, "client_reference", MAX_CLIENT_REFERENCE_CHARS)
        except ServiceError as exc:
            raise _at(where, exc) from None
        parsed.append(BatchItem(image=rec.image, url=rec.url, client_reference=reference,
                                options=rec.options if rec.options != options else None))
    return BatchSubmission(
        items=parsed, options=options, priority=parse_priority(body, Priority.BULK),
        callback_url=parse_callback_url(body),
        client_reference=_optional_text(body, "client_reference",
                                        MAX_CLIENT_REFERENCE_CHARS),
    )


def parse_timestamp(value: str | None, name: str) -> datetime | None:
    """ISO-8601 with a zone (``Z`` or ``+08:00``); a bare date or time means UTC."""
    if value is None or value == "":
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid(f"{name} must be an ISO-8601 timestamp") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


# --- responses ------------------------------------------------------------------------


def timestamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def job_path(project_id: str, job_id: str) -> str:
    return f"/v2/{project_id}/ocr/id-card/jobs/{job_id}"


def batch_path(project_id: str, batch_id: str) -> str:
    return f"/v2/{project_id}/ocr/id-card/batches/{batch_id}"


def webhook_view(job: Job, last: WebhookDelivery | None) -> dict[str, Any] | None:
    """The job's webhook as the API shows it, from the job's webhook state and its last
    recorded attempt; None when the job has no ``callback_url`` or was cancelled (no
    webhook is sent for it). Before the job ends, and between retries, it is 'pending'."""
    if not job.callback_url or job.status == JobStatus.CANCELLED.value:
        return None
    state = job.webhook_state or WebhookState.PENDING.value
    return {
        "state": state,
        "attempts": last.attempt if last is not None else 0,
        "last_attempt_at": timestamp(last.at) if last is not None else None,
        "last_status_code": last.status_code if last is not None else None,
        "last_error": last.error if last is not None else None,
        "next_attempt_at": (timestamp(last.next_attempt_at)
                            if last is not None and state == WebhookState.PENDING.value
                            else None),
    }


def job_view(job: Job, result: dict[str, Any] | None = None, *,
             with_result: bool = True, last_delivery: WebhookDelivery | None = None,
             ) -> dict[str, Any]:
    """A job as the API shows it; ``result`` is the body the sync route would answer,
    ``last_delivery`` the job's last webhook attempt (``webhook_view``)."""
    view: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status,
        "priority": job.priority,
        "client_reference": job.client_reference,
        "batch_id": job.batch_id,
        "created_at": timestamp(job.created_at),
        "started_at": timestamp(job.started_at),
        "finished_at": timestamp(job.finished_at),
        "expires_at": timestamp(job.expires_at),
        "attempts": job.attempts,
        "error_code": job.error_code,
        "error_msg": job.error_msg,
        "webhook": webhook_view(job, last_delivery),
    }
    if with_result:
        view["result"] = result
    return view


def job_created_view(job: Job) -> dict[str, Any]:
    return {"job_id": job.id, "status": job.status,
            "status_url": job_path(job.project_id, job.id)}


def event_view(event: JobEvent) -> dict[str, Any]:
    return {"at": timestamp(event.at), "event": event.event, "actor": event.actor,
            "detail": event.detail or {}}


def job_response_body(job: Job, result: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the sync route answered, or would answer, for an ended job: the result
    body, the error body, or None while the job has not ended (or was purged)."""
    if job.status == JobStatus.SUCCEEDED.value:
        return result
    if job.status == JobStatus.FAILED.value:
        return {"error_code": job.error_code, "error_msg": job.error_msg}
    return None


# --- OpenAPI documentation ------------------------------------------------------------

_flag_fields: dict[str, Any] = {
    name: (bool | None, Field(None, description=f"`{name}`: a JSON boolean, default false"))
    for name in FLAGS
}
_input_fields: dict[str, Any] = {
    "image": (str | None, Field(None, min_length=1, description="base64 image, no data: "
                                "prefix; exactly one of image and url")),
    "url": (str | None, Field(None, min_length=1, max_length=MAX_URL_CHARS,
                              description="http(s) URL of the image")),
    "side": (Literal[SIDES] | Literal[""] | None,  # type: ignore[valid-type]
             Field(None, description="absent or empty: detected automatically")),
}
_job_fields: dict[str, Any] = {
    "callback_url": (str | None, Field(None, max_length=MAX_CALLBACK_URL_CHARS,
                                       description="http(s) URL that receives the webhook")),
    "priority": (Literal["interactive", "bulk"] | None, Field(None)),
    "client_reference": (str | None, Field(None, max_length=MAX_CLIENT_REFERENCE_CHARS)),
}

IdCardRequest = create_model("IdCardRequest", **_input_fields, **_flag_fields)
JobRequest = create_model("JobRequest", **_input_fields, **_flag_fields, **_job_fields)
BatchItemRequest = create_model(
    "BatchItemRequest", **_input_fields, **_flag_fields,
    client_reference=_job_fields["client_reference"],
)
BatchRequest = create_model(
    "BatchRequest",
    items=(list[BatchItemRequest], Field(  # type: ignore[valid-type]
        ..., min_length=1, description="at most IDCARD_BATCH_MAX_ITEMS (1000) items")),
    side=_input_fields["side"], **_flag_fields, **_job_fields,
)


class ErrorBody(BaseModel):
    error_code: str
    error_msg: str


class IdCardResponse(BaseModel):
    result: dict[str, Any]


class JobCreated(BaseModel):
    job_id: str
    status: str
    status_url: str


class WebhookView(BaseModel):
    state: Literal["pending", "delivered", "failed"] = Field(
        description="pending until the receiver answers 2xx (delivered) or the last of "
        "IDCARD_WEBHOOK_MAX_ATTEMPTS attempts fails (failed)")
    attempts: int = Field(description="delivery attempts made so far")
    last_attempt_at: str | None
    last_status_code: int | None = Field(
        description="HTTP status of the last attempt; null when it got no answer")
    last_error: str | None = Field(
        description="why the last attempt got no answer: timeout, connect error, "
        "refused, host not found")
    next_attempt_at: str | None = Field(description="when the next retry is due, while "
                                        "pending")


class JobView(BaseModel):
    job_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    priority: str
    client_reference: str | None
    batch_id: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    expires_at: str
    attempts: int
    error_code: str | None
    error_msg: str | None
    webhook: WebhookView | None = Field(
        None, description="delivery of the webhook; null without callback_url")
    result: dict[str, Any] | None = Field(
        None, description="the body the sync route answers ({\"result\": {...}}); "
        "only when succeeded")


class JobList(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None


class EventView(BaseModel):
    at: str
    event: str
    actor: str
    detail: dict[str, Any]


class JobEvents(BaseModel):
    job_id: str
    events: list[EventView]


class BatchCreated(BaseModel):
    batch_id: str
    job_ids: list[str]
    status_url: str
    results_url: str


class BatchView(BaseModel):
    batch_id: str
    created_at: str
    priority: str
    client_reference: str | None
    total: int
    counts: dict[str, int]
    done: bool


DOC_MODELS: tuple[type[BaseModel], ...] = (IdCardRequest, JobRequest, BatchRequest)


def request_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its JSON body by hand."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "AIS.01xx: invalid request"},
    401: {"model": ErrorBody, "description": "APIGW.0301: missing or wrong credential"},
    404: {"model": ErrorBody, "description": "IDC.0404: no such job or batch"},
    429: {"model": ErrorBody, "description": "APIGW.0308: the project's rate limit is "
          "exceeded; retry after the seconds in the Retry-After header",
          "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
    500: {"model": ErrorBody, "description": "AIS.0105: internal error"},
    503: {"model": ErrorBody, "description": "IDC.0503: not ready"},
}
