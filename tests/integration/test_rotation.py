"""Rotating a project's credentials without downtime, as an operator does it: the CLI
(``projects rotate`` / ``revoke-previous``) on the live API's PostgreSQL database, then
real HTTP with the old and the new token, hand-signed AK/SK requests and the official
SDK, and webhooks to a local receiver checked with the README's own verifier.

Also: migration 0002 upgrades a 0001 database that holds data, and downgrades.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from idcard import webhooks
from idcard.cli import CREDENTIAL_KINDS
from idcard.cli import main as cli_main
from idcard.db import dispose_engines, session_scope
from idcard.migrate import current_revision, downgrade, head_revision, upgrade
from idcard.models import Project, UTCDateTime, utcnow
from idcard.projects import (
    CREDENTIALS,
    create_project,
    project_by_access_key,
    project_by_token,
    rotate_credentials,
)
from idcard.settings import get_settings

from .api_support import TINY, Api, assert_error
from .conftest import TEST_SECRET_KEY, throwaway_postgres, use_settings
from .live_server import wait_until
from .test_sdk_auth import (
    ClientRequestException,
    IdCardRequestBody,
    RecognizeIdCardRequest,
    SignedCall,
    sdk_client,
)
from .worker_support import LocalServer, send

README = Path(__file__).resolve().parents[2] / "README.md"
SINGLE = re.compile(r"t=\d+,v1=[0-9a-f]{64}")
DOUBLE = re.compile(r"t=\d+,v1=([0-9a-f]{64}),v1=([0-9a-f]{64})")


def readme_verifier() -> Callable[..., bool]:
    """The webhook verifier the README gives receivers, run as they would copy it."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (code,) = [b for b in blocks if "def verify_idcard_signature" in b]
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - our own README
    return namespace["verify_idcard_signature"]


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, str]:
    assert cli_main(list(argv)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def project(server: str) -> Api:
    with session_scope() as session:
        return Api(server, create_project(session, "rotating"))


def token_status(api: Api, token: str, pid: str | None = None) -> int:
    return httpx.get(f"{api.http.base_url}/v2/{pid or api.pid}/ocr/id-card/jobs",
                     headers={"X-Auth-Token": token}, timeout=30).status_code


def signed_status(api: Api, ak: str, sk: str, pid: str | None = None) -> int:
    r = SignedCall(str(api.http.base_url), "GET", f"/v2/{pid or api.pid}/ocr/id-card/jobs",
                   ak=ak, sk=sk, query=[("limit", "1")]).send()
    if r.status_code == 401:
        assert_error(r, 401, "APIGW.0301")
    return r.status_code


def sdk_answer(api: Api, ak: str, sk: str) -> tuple[int, str]:
    """What the official SDK gets for a tiny image: 400 AIS.0103 once authenticated."""
    client = sdk_client(str(api.http.base_url), ak, sk, api.pid)
    with pytest.raises(ClientRequestException) as info:
        client.recognize_id_card(RecognizeIdCardRequest(body=IdCardRequestBody(image=TINY)))
    return info.value.status_code, info.value.error_code


AUTHENTICATED = (400, "AIS.0103")
REFUSED = (401, "APIGW.0301")


def end_grace(project_id: str) -> None:
    """As if ``previous_valid_until`` had passed."""
    past = utcnow() - timedelta(seconds=1)
    with session_scope() as session:
        row = session.get(Project, project_id)
        for column in ("previous_token_expires_at", "previous_access_key_expires_at",
                       "previous_webhook_secret_expires_at"):
            if getattr(row, column) is not None:
                setattr(row, column, past)


def valid_until(creds: dict[str, str]) -> datetime:
    return datetime.strptime(creds["previous_valid_until"], "%Y-%m-%dT%H:%M:%SZ"
                             ).replace(tzinfo=timezone.utc)


# --- the pieces -----------------------------------------------------------------------


def test_the_cli_offers_the_credential_kinds_the_projects_module_has() -> None:
    assert CREDENTIAL_KINDS == CREDENTIALS


def test_a_webhook_signature_with_two_secrets() -> None:
    body, t = b'{"event":"job.failed"}', int(time.time())
    verify_readme = readme_verifier()
    single = webhooks.sign("new-secret", body, t)
    assert SINGLE.fullmatch(single)  # the contract's format, unchanged
    double = webhooks.sign(["new-secret", "old-secret"], body, t)
    first, second = DOUBLE.fullmatch(double).groups()
    assert single == f"t={t},v1={first}"  # the current secret first
    assert webhooks.sign("old-secret", body, t) == f"t={t},v1={second}"
    for verify in (webhooks.verify, verify_readme):
        assert verify("new-secret", body, double) and verify("old-secret", body, double)
        assert verify("new-secret", body, single)
        assert not verify("old-secret", body, single)
        assert not verify("other-secret", body, double)
        assert not verify("new-secret", body + b" ", double)
        assert not verify("new-secret", body, f"t={t},t={t},v1={first}")
        assert not verify("new-secret", body, f"v1={first}")
        stale = webhooks.sign(["new-secret"], body, t - 3600)
        assert not verify("new-secret", body, stale)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0002_upgrades_a_0001_database_with_data_and_downgrades(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from idcard import crypto

    with ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
        else:
            url = stack.enter_context(
                throwaway_postgres(request.getfixturevalue("postgres_admin_url")))
        use_settings(monkeypatch, database_url=url, secret_key=TEST_SECRET_KEY)
        stack.callback(dispose_engines)
        upgrade(url, "0001")
        # A project and a job as 0001 stores them.
        meta = sa.MetaData()
        projects = sa.Table(
            "projects", meta, sa.Column("id", sa.String), sa.Column("name", sa.String),
            sa.Column("created_at", UTCDateTime()), sa.Column("token_hash", sa.String),
            sa.Column("access_key", sa.String), sa.Column("secret_key_enc", sa.LargeBinary),
            sa.Column("webhook_secret_enc", sa.LargeBinary))
        jobs = sa.Table(
            "jobs", meta, sa.Column("id", sa.String), sa.Column("project_id", sa.String),
            sa.Column("status", sa.String), sa.Column("priority", sa.String),
            sa.Column("options", sa.JSON), sa.Column("input_kind", sa.String),
            sa.Column("created_at", UTCDateTime()), sa.Column("attempts", sa.Integer),
            sa.Column("expires_at", UTCDateTime()))
        pid, ak, sk, token = "p" * 32, "AK0001EXISTING000000", "s" * 40, "t0001-token"
        now = utcnow()
        with session_scope() as s:
            s.execute(projects.insert().values(
                id=pid, name="bank", created_at=now, token_hash=crypto.hash_token(token),
                access_key=ak, secret_key_enc=crypto.encrypt_text(sk),
                webhook_secret_enc=crypto.encrypt_text("w" * 40)))
            s.execute(jobs.insert().values(
                id="j" * 32, project_id=pid, status="succeeded", priority="bulk",
                options={}, input_kind="image", created_at=now, attempts=1,
                expires_at=now + timedelta(days=7)))

        upgrade(url)
        assert current_revision(url) == head_revision()
        with session_scope() as s:
            assert project_by_access_key(s, ak)[1] == sk
            assert project_by_token(s, token).id == pid
            new = rotate_credentials(s, pid, ["aksk"])
        with session_scope() as s:
            assert project_by_access_key(s, ak)[1] == sk  # in its grace period
            assert project_by_access_key(s, new["ak"])[1] == new["sk"]
        dispose_engines()

        downgrade(url, "0001")
        assert current_revision(url) == "0001"
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
        try:
            columns = {c["name"] for c in sa.inspect(engine).get_columns("projects")}
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT id, access_key FROM projects")).all()
                job_ids = conn.execute(sa.text("SELECT id FROM jobs")).scalars().all()
        finally:
            engine.dispose()
        assert not any(c.startswith("previous_access") or "webhook_secret_exp" in c
                       for c in columns)
        # The data stays; only the current credentials survive a downgrade.
        assert rows == [(pid, new["ak"])] and job_ids == ["j" * 32]

        upgrade(url)
        with session_scope() as s:
            assert project_by_access_key(s, new["ak"])[1] == new["sk"]
            assert project_by_access_key(s, ak) is None
            assert s.get(Project, pid).previous_access_key is None


# --- AK/SK and tokens on the live API -------------------------------------------------


def test_the_old_sk_works_during_the_grace_period_and_not_after(
        project: Api, capsys: pytest.CaptureFixture[str]) -> None:
    old = project.creds
    new = cli_json(capsys, "projects", "rotate", project.pid, "--credential", "aksk",
                   "--grace", "5")
    assert set(new) == {"project_id", "previous_valid_until", "ak", "sk"}
    assert new["ak"] != old["ak"] and new["sk"] != old["sk"]
    deadline = valid_until(new)
    assert abs((deadline - utcnow()).total_seconds() - 5) < 2

    # Both pairs, by hand-signed requests and by the official SDK.
    assert signed_status(project, old["ak"], old["sk"]) == 200
    assert signed_status(project, new["ak"], new["sk"]) == 200
    assert sdk_answer(project, old["ak"], old["sk"]) == AUTHENTICATED
    assert sdk_answer(project, new["ak"], new["sk"]) == AUTHENTICATED
    # The old AK with the new SK (or the reverse) is no pair at all.
    assert signed_status(project, old["ak"], new["sk"]) == 401
    assert signed_status(project, new["ak"], old["sk"]) == 401

    time.sleep(max(0.0, (deadline - utcnow()).total_seconds()) + 0.5)
    assert signed_status(project, old["ak"], old["sk"]) == 401
    assert sdk_answer(project, old["ak"], old["sk"]) == REFUSED
    assert signed_status(project, new["ak"], new["sk"]) == 200
    assert sdk_answer(project, new["ak"], new["sk"]) == AUTHENTICATED
    assert token_status(project, old["token"]) == 200  # only the AK/SK was rotated


def test_revoke_previous_ends_the_grace_period_at_once(
        project: Api, capsys: pytest.CaptureFixture[str]) -> None:
    old = project.creds
    new = cli_json(capsys, "projects", "rotate", project.pid, "--credential", "all")
    assert set(new) == {"project_id", "previous_valid_until", "token", "ak", "sk",
                        "webhook_secret"}
    grace = get_settings().credential_grace_seconds
    assert abs((valid_until(new) - utcnow()).total_seconds() - grace) < 60

    assert token_status(project, old["token"]) == token_status(project, new["token"]) == 200
    assert signed_status(project, old["ak"], old["sk"]) == 200
    assert signed_status(project, new["ak"], new["sk"]) == 200
    # Who has not switched yet shows in the audit trail.
    for token, actor in ((old["token"], "api:token:previous"), (new["token"], "api:token")):
        r = httpx.post(f"{project.http.base_url}{project.jobs}", json={"image": TINY},
                       headers={"X-Auth-Token": token}, timeout=30)
        assert r.status_code == 202, r.text
        events = project.http.get(f"{project.jobs}/{r.json()['job_id']}/events").json()
        assert events["events"][0]["actor"] == actor

    assert cli_main(["projects", "revoke-previous", project.pid]) == 0
    assert token_status(project, old["token"]) == 401
    assert signed_status(project, old["ak"], old["sk"]) == 401
    assert sdk_answer(project, old["ak"], old["sk"]) == REFUSED
    assert token_status(project, new["token"]) == 200
    assert signed_status(project, new["ak"], new["sk"]) == 200
    assert sdk_answer(project, new["ak"], new["sk"]) == AUTHENTICATED


def test_a_second_rotation_ends_the_first_credential_at_once(
        project: Api, capsys: pytest.CaptureFixture[str]) -> None:
    first = project.creds
    second = cli_json(capsys, "projects", "rotate", project.pid, "--credential", "aksk")
    third = cli_json(capsys, "projects", "rotate", project.pid, "--credential", "aksk")
    assert signed_status(project, first["ak"], first["sk"]) == 401
    assert signed_status(project, second["ak"], second["sk"]) == 200
    assert signed_status(project, third["ak"], third["sk"]) == 200


def test_a_zero_grace_ends_the_old_token_at_once(
        project: Api, capsys: pytest.CaptureFixture[str]) -> None:
    new = cli_json(capsys, "projects", "rotate", project.pid, "--credential", "token",
                   "--grace", "0")
    assert set(new) == {"project_id", "previous_valid_until", "token"}
    assert token_status(project, project.creds["token"]) == 401
    assert token_status(project, new["token"]) == 200


def test_rotation_is_isolated_per_project(
        server: str, capsys: pytest.CaptureFixture[str]) -> None:
    with session_scope() as session:
        a = Api(server, create_project(session, "bank-a"))
        b = Api(server, create_project(session, "bank-b"))
    b_new = cli_json(capsys, "projects", "rotate", b.pid, "--credential", "token")
    with session_scope() as session:
        b_row = session.get(Project, b.pid)
        before = (b_row.token_hash, b_row.access_key, bytes(b_row.secret_key_enc),
                  bytes(b_row.webhook_secret_enc), b_row.previous_token_hash)

    a_new = cli_json(capsys, "projects", "rotate", a.pid, "--credential", "all")
    assert cli_main(["projects", "revoke-previous", a.pid]) == 0
    with session_scope() as session:
        b_row = session.get(Project, b.pid)
        after = (b_row.token_hash, b_row.access_key, bytes(b_row.secret_key_enc),
                 bytes(b_row.webhook_secret_enc), b_row.previous_token_hash)
    assert after == before  # A's rotation and revocation never touched B
    # B's credentials, its previous token in grace included, still work on B...
    assert token_status(b, b.creds["token"]) == token_status(b, b_new["token"]) == 200
    assert signed_status(b, b.creds["ak"], b.creds["sk"]) == 200
    # ...and no credential of A, old or new, reaches B (nor B's reaches A).
    assert token_status(a, a.creds["token"], b.pid) == 401
    assert token_status(a, a_new["token"], b.pid) == 401
    assert signed_status(a, a_new["ak"], a_new["sk"], b.pid) == 401
    assert signed_status(a, a.creds["ak"], a.creds["sk"], b.pid) == 401
    assert signed_status(b, b.creds["ak"], b.creds["sk"], a.pid) == 401
    assert token_status(a, a_new["token"]) == 200


def test_rotating_an_unknown_project_fails_cleanly(
        api_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["projects", "rotate", "0" * 32, "--credential", "all"]) == 2
    assert "no such project" in capsys.readouterr().err
    assert cli_main(["projects", "revoke-previous", "0" * 32]) == 2
    with pytest.raises(SystemExit):
        cli_main(["projects", "rotate", "0" * 32, "--credential", "all", "--grace", "-1"])


# --- webhooks -------------------------------------------------------------------------


def test_webhooks_are_signed_with_both_secrets_during_the_grace_period(
        project: Api, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDCARD_URL_ALLOW_HOSTS", "127.0.0.1")  # the receiver is local
    get_settings.cache_clear()
    verify = readme_verifier()
    old_secret = project.creds["webhook_secret"]
    new = cli_json(capsys, "projects", "rotate", project.pid, "--credential",
                   "webhook-secret")
    assert set(new) == {"project_id", "previous_valid_until", "webhook_secret"}

    with LocalServer() as hooks:
        hooks.routes["/hook"] = lambda h: send(h, 204)

        def delivered() -> Any:
            count = len(hooks.received)
            job_id = project.submitted({"image": TINY, "callback_url": hooks.url("/hook")})
            wait_until(lambda: len(hooks.received) > count, 60, "webhook not delivered")
            hit = hooks.received[-1]
            assert json.loads(hit.body)["job_id"] == job_id
            return hit

        during = delivered()
        end_grace(project.pid)
        after = delivered()

    header = during.headers[webhooks.SIGNATURE_HEADER]
    assert DOUBLE.fullmatch(header), header
    assert verify(new["webhook_secret"], during.body, header)
    assert verify(old_secret, during.body, header)
    assert not verify("x" * 40, during.body, header)

    header = after.headers[webhooks.SIGNATURE_HEADER]
    assert SINGLE.fullmatch(header), header
    assert verify(new["webhook_secret"], after.body, header)
    assert not verify(old_secret, after.body, header)
