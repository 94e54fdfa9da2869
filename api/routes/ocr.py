"""``POST /v2/{project_id}/ocr/id-card``: the vendor's synchronous API, wire-compatible."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import CallerDep, RawJsonBody, ServiceDep
from api.schemas import (
    ERROR_RESPONSES,
    ErrorBody,
    IdCardRequest,
    IdCardResponse,
    request_body_doc,
)

router = APIRouter(tags=["recognition"])


@router.post(
    "/v2/{project_id}/ocr/id-card",
    summary="Recognise an ID card and wait for the answer",
    openapi_extra=request_body_doc(IdCardRequest),
    responses={200: {"model": IdCardResponse}, **ERROR_RESPONSES,
               504: {"model": ErrorBody, "description": "IDC.0408: still running; poll "
                     "the job named in error_msg"}},
)
async def recognize_id_card(
    caller: CallerDep, body: RawJsonBody, service: ServiceDep,
) -> JSONResponse:
    status, answer = await service.recognize(body)
    return JSONResponse(answer, status_code=status)
