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


def test_values_are_stored_as_aes_gcm() -> None:
    stored = crypto.encrypt(b"\xff" * 3000)
    assert stored[:1] == b"\xa7"  # the version byte of the AES-GCM form
    # Version byte, 12-byte nonce and 16-byte tag: no padding, no base64.
    assert len(stored) == 3000 + 1 + 12 + 16
    assert crypto.decrypt(stored) == b"\xff" * 3000
    assert crypto.decrypt(memoryview(stored)) == b"\xff" * 3000  # as a driver returns bytea
    # A fresh nonce each time: the same photo never gives the same ciphertext.
    assert crypto.encrypt(b"photo") != crypto.encrypt(b"photo")


def test_fernet_values_written_before_still_decrypt_and_rotate_to_aes_gcm() -> None:
    old_text = crypto._keyring().fernet.encrypt(b"photo")  # base64 tokens (first form)
    old_binary = base64.urlsafe_b64decode(old_text)  # binary tokens (second form)
    assert old_text.startswith(b"gAAAAA") and old_binary[:1] == b"\x80"
    for old in (old_text, old_binary):
        assert crypto.decrypt(old) == b"photo"
        assert crypto.decrypt(memoryview(old)) == b"photo"
        rotated = crypto.rotate(old)
        assert rotated[:1] == b"\xa7" and crypto.decrypt(rotated) == b"photo"


def test_a_previous_key_still_decrypts_and_rotation_moves_to_the_current_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stored = crypto.encrypt(b"photo")
    monkeypatch.setenv("IDCARD_SECRET_KEY",
                       "new-key-abcdefghijklmnopqrstuvwxyz,unit-test-key-0123456789abcdef")
    get_settings.cache_clear()
    assert crypto.decrypt(stored) == b"photo"
    rotated = crypto.rotate(stored)
    monkeypatch.setenv("IDCARD_SECRET_KEY", "new-key-abcdefghijklmnopqrstuvwxyz")
    get_settings.cache_clear()
    assert crypto.decrypt(rotated) == b"photo"
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(stored)  # the old key is gone


@pytest.mark.parametrize("at", [1, 13, -1])  # the nonce, the ciphertext, the tag
def test_tampered_values_do_not_decrypt(at: int) -> None:
    stored = bytearray(crypto.encrypt(b"photo"))
    stored[at] ^= 1
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(bytes(stored))
    with pytest.raises(crypto.DecryptionError):
        crypto.rotate(bytes(stored))
