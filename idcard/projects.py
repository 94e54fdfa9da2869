"""Projects and their credentials: an X-Auth-Token, an AK/SK pair, a webhook secret.

The token is stored only as a keyed hash; the SK and the webhook secret are encrypted
(the server needs them back to check signatures and to sign webhooks). Only
``create_project`` and the rotations return a secret in clear.

Rotation without downtime: each kind of credential has a current value and at most one
previous value, valid until its grace deadline (IDCARD_CREDENTIAL_GRACE_SECONDS, 24 h by
default). During the grace period both authenticate, and webhooks are signed with both
secrets. Rotating again replaces the previous value; ``revoke_previous`` ends a grace
period early.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from idcard import crypto
from idcard.models import Project, utcnow
from idcard.settings import get_settings

TOKEN = "token"
AKSK = "aksk"
WEBHOOK_SECRET = "webhook-secret"
CREDENTIALS = (TOKEN, AKSK, WEBHOOK_SECRET)


def create_project(
    session: Session, name: str, *, rate_limit_per_minute: int | None = None,
    now: datetime | None = None,
) -> dict[str, str]:
    """A new project; ``{"project_id", "ak", "sk", "token", "webhook_secret"}``."""
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise ValueError("a project name has 1 to 200 characters")
    creds = {
        "project_id": uuid.uuid4().hex,
        "ak": crypto.new_access_key(),
        "sk": crypto.new_secret(),
        "token": crypto.new_token(),
        "webhook_secret": crypto.new_secret(),
    }
    session.add(Project(
        id=creds["project_id"],
        name=name,
        created_at=now or utcnow(),
        token_hash=crypto.hash_token(creds["token"]),
        access_key=creds["ak"],
        secret_key_enc=crypto.encrypt_text(creds["sk"]),
        webhook_secret_enc=crypto.encrypt_text(creds["webhook_secret"]),
        rate_limit_per_minute=rate_limit_per_minute,
    ))
    session.flush()
    return creds


def get_project(session: Session, project_id: str) -> Project | None:
    return session.get(Project, project_id)


def project_by_token(
    session: Session, token: str, *, now: datetime | None = None,
) -> Project | None:
    """The project of an X-Auth-Token (the current one, or the previous one within its
    grace period after ``rotate_token``), else None.

    A hash made under an older SECRET_KEY entry still matches and is re-hashed under the
    current key on the way (the caller's commit keeps it).
    """
    if not token:
        return None
    candidates = crypto.token_hash_candidates(token)
    project = session.scalars(select(Project).where(or_(
        Project.token_hash.in_(candidates), Project.previous_token_hash.in_(candidates)
    ))).first()
    if project is None:
        return None
    if project.token_hash in candidates:
        if project.token_hash != candidates[0]:
            project.token_hash = candidates[0]
        return project
    expires = project.previous_token_expires_at
    if expires is None or expires <= (now or utcnow()):
        return None
    if project.previous_token_hash != candidates[0]:
        project.previous_token_hash = candidates[0]
    return project


def is_previous_token(project: Project, token: str) -> bool:
    """Whether ``token`` (found by ``project_by_token``) is the replaced one."""
    return (project.previous_token_hash is not None
            and project.previous_token_hash in crypto.token_hash_candidates(token))


def _in_grace(expires: datetime | None, now: datetime | None) -> bool:
    return expires is not None and expires > (now or utcnow())


def project_by_access_key(
    session: Session, access_key: str, *, now: datetime | None = None,
) -> tuple[Project, str] | None:
    """``(project, SK in clear)`` for checking an AK/SK signature, else None.

    The current pair, or the previous one within its grace period.
    """
    if not access_key:
        return None
    project = session.scalars(select(Project).where(or_(
        Project.access_key == access_key, Project.previous_access_key == access_key
    ))).first()
    if project is None:
        return None
    if project.access_key == access_key:
        return project, crypto.decrypt_text(project.secret_key_enc)
    if project.previous_secret_key_enc is None or not _in_grace(
            project.previous_access_key_expires_at, now):
        return None
    return project, crypto.decrypt_text(project.previous_secret_key_enc)


def webhook_secret(project: Project) -> str:
    """The current secret that signs this project's webhooks."""
    return crypto.decrypt_text(project.webhook_secret_enc)


def webhook_secrets(project: Project, *, now: datetime | None = None) -> tuple[str, ...]:
    """Every secret a webhook is signed with: the current one, then the previous one
    while it is in its grace period."""
    current = webhook_secret(project)
    if project.previous_webhook_secret_enc is not None and _in_grace(
            project.previous_webhook_secret_expires_at, now):
        return current, crypto.decrypt_text(project.previous_webhook_secret_enc)
    return (current,)


def _grace(grace: timedelta | None) -> timedelta:
    if grace is None:
        return timedelta(seconds=get_settings().credential_grace_seconds)
    if grace < timedelta(0):
        raise ValueError("the grace period cannot be negative")
    return grace


def _locked(session: Session, project_id: str) -> Project:
    # FOR UPDATE: two rotations at once must not both keep the same "previous".
    project = session.get(Project, project_id, with_for_update=True)
    if project is None:
        raise LookupError(f"no such project: {project_id}")
    return project


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rotate_credentials(
    session: Session, project_id: str, credentials: Iterable[str], *,
    grace: timedelta | None = None, now: datetime | None = None,
) -> dict[str, str]:
    """Issue new credentials of the given kinds (``CREDENTIALS``); each replaced one
    stays valid for ``grace`` (default IDCARD_CREDENTIAL_GRACE_SECONDS; zero ends it at
    once). A previous credential still in its grace period is dropped.

    Returns ``{"project_id", "previous_valid_until"}`` plus the new secrets under the
    names ``create_project`` uses: ``token``; ``ak`` and ``sk``; ``webhook_secret``.
    """
    kinds = set(credentials)
    unknown = kinds - set(CREDENTIALS)
    if unknown or not kinds:
        raise ValueError(f"credential must be one of {', '.join(CREDENTIALS)}")
    project = _locked(session, project_id)
    # Whole seconds: the deadline stored is exactly the one printed.
    until = ((now or utcnow()) + _grace(grace)).replace(microsecond=0)
    out = {"project_id": project.id, "previous_valid_until": _iso(until)}
    if TOKEN in kinds:
        out["token"] = crypto.new_token()
        project.previous_token_hash = project.token_hash
        project.previous_token_expires_at = until
        project.token_hash = crypto.hash_token(out["token"])
    if AKSK in kinds:
        out["ak"], out["sk"] = crypto.new_access_key(), crypto.new_secret()
        project.previous_access_key = project.access_key
        project.previous_secret_key_enc = project.secret_key_enc
        project.previous_access_key_expires_at = until
        project.access_key = out["ak"]
        project.secret_key_enc = crypto.encrypt_text(out["sk"])
    if WEBHOOK_SECRET in kinds:
        out["webhook_secret"] = crypto.new_secret()
        project.previous_webhook_secret_enc = project.webhook_secret_enc
        project.previous_webhook_secret_expires_at = until
        project.webhook_secret_enc = crypto.encrypt_text(out["webhook_secret"])
    session.flush()
    return out


def revoke_previous(
    session: Session, project_id: str, credentials: Iterable[str] = CREDENTIALS,
) -> None:
    """End the grace period of the previous credentials of the given kinds now: only the
    current ones keep working. The previous values are erased."""
    kinds = set(credentials)
    if kinds - set(CREDENTIALS) or not kinds:
        raise ValueError(f"credential must be one of {', '.join(CREDENTIALS)}")
    project = _locked(session, project_id)
    if TOKEN in kinds:
        project.previous_token_hash = None
        project.previous_token_expires_at = None
    if AKSK in kinds:
        project.previous_access_key = None
        project.previous_secret_key_enc = None
        project.previous_access_key_expires_at = None
    if WEBHOOK_SECRET in kinds:
        project.previous_webhook_secret_enc = None
        project.previous_webhook_secret_expires_at = None
    session.flush()


def rotate_token(
    session: Session, project_id: str, *, grace: timedelta | None = None,
    now: datetime | None = None,
) -> str:
    """Issue a new X-Auth-Token; the old one keeps working for ``grace`` (default
    IDCARD_CREDENTIAL_GRACE_SECONDS)."""
    return rotate_credentials(session, project_id, [TOKEN], grace=grace, now=now)["token"]
