"""Encryption at rest: the stored form, and values written in the earlier form."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from idcard import crypto
from idcard.settings import get_settings


@pytest.fixture(autouse=True)
def secret_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("IDCARD_SECRET_KEY", "unit-test-key-0123456789abcdef")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_values_are_stored_as_binary_tokens() -> None:
    stored = crypto.encrypt(b"\xff" * 3000)
    assert stored[:1] == b"\x80"  # Fernet's version byte: no base64 text
    # 16 bytes of padding at most, plus version, time, IV and HMAC (57 bytes).
    assert len(stored) <= 3000 + 16 + 57
    assert crypto.decrypt(stored) == b"\xff" * 3000


def test_base64_tokens_written_before_still_decrypt_and_rotate_to_binary() -> None:
    old_form = base64.urlsafe_b64encode(crypto.encrypt(b"photo"))
    assert old_form.startswith(b"gAAAAA")
    assert crypto.decrypt(old_form) == b"photo"
    assert crypto.decrypt(memoryview(old_form)) == b"photo"  # as a driver returns bytea
    rotated = crypto.rotate(old_form)
    assert rotated[:1] == b"\x80" and crypto.decrypt(rotated) == b"photo"


def test_tampered_values_do_not_decrypt() -> None:
    stored = bytearray(crypto.encrypt(b"photo"))
    stored[-1] ^= 1
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(bytes(stored))
