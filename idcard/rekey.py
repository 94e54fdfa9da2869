"""Re-encrypt everything stored under older SECRET_KEY entries with the current one.

Rotation: prepend the new key to IDCARD_SECRET_KEY, restart, run ``reencrypt_all``;
then the old key can be dropped. API tokens are keyed hashes and cannot be re-hashed
without the token: each is upgraded the next time it is used (``project_by_token``);
tokens unused since the rotation stop working once the old key is dropped, so reissue
them with ``rotate_token`` (or keep the old key listed until they have been used).
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idcard import crypto
from idcard.models import Job, JobInput, Project

# (model, key column, encrypted columns)
_ENCRYPTED = (
    (Project, Project.id, (Project.secret_key_enc, Project.webhook_secret_enc,
                           Project.previous_secret_key_enc,
                           Project.previous_webhook_secret_enc)),
    (Job, Job.id, (Job.url_enc, Job.result_enc)),
    (JobInput, JobInput.job_id, (JobInput.data_enc,)),
)


def reencrypt_all(session: Session, *, chunk: int = 500) -> int:
    """Rotate every encrypted value to the current key; returns how many were rewritten.

    Commits after each chunk of rows, so that a large table does not hold one long
    transaction. Each value is replaced only if it is still the value that was read, so
    a concurrent purge (value set to NULL) is never undone.
    """
    rewritten = 0
    for model, key, columns in _ENCRYPTED:
        last = ""
        while True:
            rows = session.execute(
                select(key, *columns).where(key > last).order_by(key).limit(chunk)
            ).all()
            if not rows:
                break
            for row_key, *tokens in rows:
                for column, token in zip(columns, tokens, strict=True):
                    if token is None:
                        continue
                    rewritten += session.execute(
                        update(model).where(key == row_key, column == token)
                        .values({column.key: crypto.rotate(token)})
                        .execution_options(synchronize_session=False)
                    ).rowcount
            last = rows[-1][0]
            session.commit()
    session.expire_all()  # the UPDATEs bypassed the ORM: loaded objects are stale
    return rewritten
