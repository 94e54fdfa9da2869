"""Fixtures of the fault-injection tests: a private PostgreSQL cluster for the whole
folder (one ``initdb``), a migrated database and a private Redis per module, and the
card photo the jobs read. See ``tests/integration/fault_support.py``."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator

import pytest

from ..fault_support import PrivatePostgres, PrivateRedis, required


@pytest.fixture(scope="package")
def private_pg() -> Iterator[PrivatePostgres]:
    cluster = required(PrivatePostgres)
    try:
        cluster.initdb().start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def fault_db(private_pg: PrivatePostgres, request: pytest.FixtureRequest) -> str:
    """A migrated database of this module's own in the private cluster."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    return private_pg.create_database(f"{module}_{secrets.token_hex(3)}")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    workdir = tmp_path_factory.mktemp("redis")
    server = required(lambda: PrivateRedis(workdir))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def card_b64(make_case) -> str:
    """A clean synthetic front: it reads perfectly, in about a second of CPU."""
    return base64.b64encode(make_case(1, "clean", "front").image_bytes).decode()
