"""Projects and their credentials: an X-Auth-Token, an AK/SK pair, a webhook secret.

The token is stored only as a keyed hash; the SK and the webhook secret are encrypted
(the server needs them back to check signatures and to sign webhooks). Only
``create_project`` and ``rotate_token`` ever return a secret in clear.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from idcard import crypto
from idcard.models import Project, utcnow


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


def project_by_access_key(session: Session, access_key: str) -> tuple[Project, str] | None:
    """``(project, SK in clear)`` for checking an AK/SK signature, else None."""
    if not access_key:
        return None
    project = session.scalars(
        select(Project).where(Project.access_key == access_key)
    ).one_or_none()
    if project is None:
        return None
    return project, crypto.decrypt_text(project.secret_key_enc)


def webhook_secret(project: Project) -> str:
    """The secret that signs this project's webhooks."""
    return crypto.decrypt_text(project.webhook_secret_enc)


def rotate_token(
    session: Session, project_id: str, *, grace: timedelta = timedelta(hours=24),
    now: datetime | None = None,
) -> str:
    """Issue a new X-Auth-Token; the old one keeps working for ``grace``."""
    project = session.get(Project, project_id)
    if project is None:
        raise LookupError("no such project")
    token = crypto.new_token()
    project.previous_token_hash = project.token_hash
    project.previous_token_expires_at = (now or utcnow()) + grace
    project.token_hash = crypto.hash_token(token)
    session.flush()
    return token
