"""Who is calling: a project, from its ``X-Auth-Token`` or from the AK/SK request
signature of the vendor's SDKs (``api.sdk_signature``).

Either credential belongs to one project and is valid for that ``project_id`` only.
Every failure is ``APIGW.0301``; the messages say what to fix without telling an
unknown access key from a wrong signature.

Order of the signature check: what the headers alone can refuse (a malformed
``Authorization``, an ``X-Sdk-Date`` outside the 15-minute window) is refused first,
then the access key is looked up (an unknown one is refused before the body is read),
then the body is read (size-limited, ``api.body.read_limited_body``, kept for the
route) and its SHA-256 is part of the signed request, then the signature is compared
in constant time, and last a verified signature is claimed in the replay guard
(``api.replay``): the second request with the same signature is refused.

An access key is the project's current one or, during its grace period after a
rotation, the previous one (``idcard.projects``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api import sdk_signature
from api.body import read_limited_body
from api.replay import ReplayGuard
from idcard.errors import ErrorCode, ServiceError
from idcard.models import Project
from idcard.projects import is_previous_token, project_by_access_key, project_by_token

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Auth-Token"
SDK_SIGNATURE_SCHEME = sdk_signature.ALGORITHM
PROJECT_ID_HEADER = "x-project-id"  # sent (and signed) by the SDK's BasicCredentials

# Large bodies are hashed off the event loop.
_HASH_IN_THREAD_BYTES = 256 * 1024


@dataclass(frozen=True)
class Caller:
    project: Project
    actor: str  # for the audit trail: how the caller proved who it is


def _unauthorized(message: str) -> ServiceError:
    return ServiceError(ErrorCode.UNAUTHORIZED, message)


def _actor(project: Project, kind: str, previous: bool) -> str:
    """``api:token`` / ``api:aksk``, with ``:previous`` for a replaced credential in its
    grace period: the audit trail and the log show who has not switched yet."""
    if not previous:
        return f"api:{kind}"
    log.info("project %s: request authenticated with its previous %s", project.id, kind)
    return f"api:{kind}:previous"


def _authenticate_token(session: Session, token: str, project_id: str,
                        then: Callable[[Caller], None] | None) -> Caller:
    project = project_by_token(session, token)
    if project is None:
        raise _unauthorized("the X-Auth-Token is not valid")
    caller = Caller(project=project,
                    actor=_actor(project, "token", is_previous_token(project, token)))
    if then is not None and project.id == project_id:
        then(caller)  # in the same trip to the thread pool
    return caller


def signed_request(request: Request, body: bytes,
                   names: tuple[str, ...]) -> sdk_signature.SignedRequest:
    """The parts of ``request`` that a signature over ``names`` covers."""
    scope = request.scope
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else quote(scope["path"])
    return sdk_signature.SignedRequest(
        method=request.method,
        raw_path=path,
        raw_query=scope.get("query_string", b"").decode("latin-1"),
        headers={name: request.headers.getlist(name) for name in names},
        body=body,
    )


REPLAYED = ("this signed request was already received (a replay): sign every request, "
            "retries included, again")


async def _authenticate_sdk_signature(
    request: Request, session: Session, body_limit: int,
    replay_guard: ReplayGuard | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> Caller:
    received_at = now()
    try:
        auth = sdk_signature.parse_authorization(request.headers.get("authorization", ""))
        dates = request.headers.getlist(sdk_signature.DATE_HEADER)
        sdk_date = sdk_signature.parse_sdk_date(dates[0] if len(dates) == 1 else None,
                                                received_at)
    except sdk_signature.SignatureError as exc:
        raise _unauthorized(str(exc)) from None
    found = await run_in_threadpool(project_by_access_key, session, auth.access_key)
    if found is None:
        raise _unauthorized("the AK/SK signature is not valid")
    project, secret_key = found
    body = await read_limited_body(request, body_limit)
    signed = signed_request(request, body, auth.signed_headers)
    try:
        if len(body) > _HASH_IN_THREAD_BYTES:
            await run_in_threadpool(sdk_signature.verify, signed, auth, sdk_date, secret_key)
        else:
            sdk_signature.verify(signed, auth, sdk_date, secret_key)
    except sdk_signature.SignatureError as exc:
        raise _unauthorized(str(exc)) from None
    claimed = request.headers.getlist(PROJECT_ID_HEADER)
    if claimed and claimed != [project.id]:
        raise _unauthorized("X-Project-Id does not match the credential's project")
    key = None
    if replay_guard is not None:
        key = sdk_signature.replay_key(auth)
        if not await replay_guard.claim(key,
                                        sdk_signature.replay_ttl(sdk_date, received_at)):
            raise _unauthorized(REPLAYED)
        request.state.replay_key = key  # released again if the rate limit refuses it
    actor = _actor(project, "aksk", project.access_key != auth.access_key)
    return Caller(project=project, actor=actor)


async def authenticate(request: Request, session: Session, project_id: str, *,
                       body_limit: int, replay_guard: ReplayGuard | None = None,
                       then: Callable[[Caller], None] | None = None) -> Caller:
    """The caller of a ``/v2/{project_id}/...`` request, or ``APIGW.0301``.

    A credential is valid for its own project only: another ``project_id`` in the path
    is answered as a wrong credential, never with that project's data. ``body_limit``
    bounds what a signature check reads of the body (the route's own limit). With a
    ``replay_guard``, a signature already seen is refused. ``then(caller)`` (blocking
    I/O allowed) runs on the thread pool once the caller is known to be valid for
    ``project_id``: with a token, in the same trip as the token's lookup.
    """
    token = request.headers.get(TOKEN_HEADER)
    authorization = request.headers.get("authorization", "")
    if token:
        caller = await run_in_threadpool(_authenticate_token, session, token, project_id,
                                         then)
        then = None  # done, if the project matched
    elif authorization.startswith(SDK_SIGNATURE_SCHEME + " "):
        caller = await _authenticate_sdk_signature(request, session, body_limit,
                                                   replay_guard)
    elif authorization.strip():
        raise _unauthorized(f"unsupported Authorization scheme: use {TOKEN_HEADER} or an "
                            f"{SDK_SIGNATURE_SCHEME} signature")
    else:
        raise _unauthorized(f"missing {TOKEN_HEADER} or AK/SK signature")
    if caller.project.id != project_id:
        raise _unauthorized("the credential is not valid for this project")
    if then is not None:
        await run_in_threadpool(then, caller)
    return caller
