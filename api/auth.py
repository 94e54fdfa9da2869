"""Who is calling: a project, from its ``X-Auth-Token``.

The contract also names the AK/SK request signature of the vendor's SDKs
(``Authorization: SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...`` with
``X-Sdk-Date``). It is not implemented yet: such a request is refused with a message
that says so. To add it, implement ``_authenticate_sdk_signature`` (the project comes
from ``idcard.projects.project_by_access_key``, the signed body from
``api.body.read_limited_body``) and the dispatch below already routes to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.orm import Session

from idcard.errors import ErrorCode, ServiceError
from idcard.models import Project
from idcard.projects import project_by_token

TOKEN_HEADER = "X-Auth-Token"
SDK_SIGNATURE_SCHEME = "SDK-HMAC-SHA256"


@dataclass(frozen=True)
class Caller:
    project: Project
    actor: str  # for the audit trail: how the caller proved who it is


def _unauthorized(message: str) -> ServiceError:
    return ServiceError(ErrorCode.UNAUTHORIZED, message)


def _authenticate_token(session: Session, token: str) -> Caller:
    project = project_by_token(session, token)
    if project is None:
        raise _unauthorized("the X-Auth-Token is not valid")
    return Caller(project=project, actor="api:token")


def _authenticate_sdk_signature(request: Request, session: Session) -> Caller:
    # Extension point (see the module docstring). Refusing is the only honest answer
    # until the signature is really verified.
    raise _unauthorized(
        "AK/SK request signatures are not supported yet: authenticate with X-Auth-Token"
    )


def authenticate(request: Request, session: Session, project_id: str) -> Caller:
    """The caller of a ``/v2/{project_id}/...`` request, or ``APIGW.0301``.

    A credential is valid for its own project only: another ``project_id`` in the path
    is answered as a wrong credential, never with that project's data.
    """
    token = request.headers.get(TOKEN_HEADER)
    authorization = request.headers.get("authorization", "")
    if token:
        caller = _authenticate_token(session, token)
    elif authorization.startswith(SDK_SIGNATURE_SCHEME):
        caller = _authenticate_sdk_signature(request, session)
    else:
        raise _unauthorized(f"missing {TOKEN_HEADER}")
    if caller.project.id != project_id:
        raise _unauthorized("the credential is not valid for this project")
    return caller
