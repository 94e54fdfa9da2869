"""Encryption of personal data at rest, keyed hashes, and new credentials.

Every entry of IDCARD_SECRET_KEY yields, through HKDF-SHA256 with a purpose label, one
Fernet key and one HMAC key. The first entry encrypts and hashes; all entries decrypt
and are tried when looking a hash up, so a key can be rotated in by prepending it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from idcard.settings import get_settings

_SALT = b"idcard-ocr/v1"


class DecryptionError(RuntimeError):
    """Stored data cannot be decrypted with any key of IDCARD_SECRET_KEY."""


@dataclass(frozen=True)
class _Keyring:
    fernet: MultiFernet
    mac_keys: tuple[bytes, ...]  # current first


def _derive(secret: str, purpose: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=purpose)
    return hkdf.derive(secret.encode("utf-8"))


@lru_cache(maxsize=8)
def _keyring_for(secret_keys: tuple[str, ...]) -> _Keyring:
    fernets = [Fernet(base64.urlsafe_b64encode(_derive(k, b"fernet"))) for k in secret_keys]
    return _Keyring(
        fernet=MultiFernet(fernets),
        mac_keys=tuple(_derive(k, b"hmac") for k in secret_keys),
    )


def _keyring() -> _Keyring:
    # Read the settings on every call so that a changed environment (tests, rotation
    # after cache_clear) takes effect; the derivation itself is cached.
    return _keyring_for(get_settings().secret_keys)


# Stored values are Fernet tokens in binary form (the first byte is Fernet's version,
# 0x80): a quarter smaller than the usual base64 text, which matters for images. Values
# written before that change are base64 tokens (they start with 'gAAAAA'); both decrypt.
_FERNET_VERSION = b"\x80"


def _as_token(stored: bytes) -> bytes:
    data = bytes(stored)
    return base64.urlsafe_b64encode(data) if data[:1] == _FERNET_VERSION else data


def encrypt(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(_keyring().fernet.encrypt(data))


def decrypt(stored: bytes) -> bytes:
    try:
        return _keyring().fernet.decrypt(_as_token(stored))
    except InvalidToken:
        raise DecryptionError(
            "stored data cannot be decrypted: its key is not in IDCARD_SECRET_KEY"
        ) from None


def encrypt_text(text: str) -> bytes:
    return encrypt(text.encode("utf-8"))


def decrypt_text(token: bytes) -> str:
    return decrypt(token).decode("utf-8")


def encrypt_json(obj: Any) -> bytes:
    return encrypt(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def decrypt_json(token: bytes) -> Any:
    return json.loads(decrypt(token))


def rotate(stored: bytes) -> bytes:
    """Re-encrypt ``stored`` with the current (first) key, in the binary form."""
    try:
        return base64.urlsafe_b64decode(_keyring().fernet.rotate(_as_token(stored)))
    except InvalidToken:
        raise DecryptionError(
            "stored data cannot be re-encrypted: its key is not in IDCARD_SECRET_KEY"
        ) from None


def _mac(key: bytes, purpose: str, data: bytes) -> str:
    return hmac.new(key, purpose.encode() + b"\0" + data, hashlib.sha256).hexdigest()


def keyed_hash(purpose: str, data: bytes) -> str:
    """HMAC-SHA256 (hex) with the current key; ``purpose`` separates the uses."""
    return _mac(_keyring().mac_keys[0], purpose, data)


def keyed_hash_candidates(purpose: str, data: bytes) -> list[str]:
    """The hash under every configured key, current first (for lookups during rotation)."""
    return [_mac(k, purpose, data) for k in _keyring().mac_keys]


def hash_token(token: str) -> str:
    """What is stored for an API token: the token itself never is."""
    return keyed_hash("token", token.encode("utf-8"))


def token_hash_candidates(token: str) -> list[str]:
    return keyed_hash_candidates("token", token.encode("utf-8"))


def new_token() -> str:
    """An X-Auth-Token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


_AK_ALPHABET = string.ascii_uppercase + string.digits
_SK_ALPHABET = string.ascii_letters + string.digits


def new_access_key() -> str:
    """An AK shaped like the vendor's: 20 upper-case letters and digits."""
    return "".join(secrets.choice(_AK_ALPHABET) for _ in range(20))


def new_secret(length: int = 40) -> str:
    """An SK or a webhook secret: letters and digits (about 238 bits for 40)."""
    return "".join(secrets.choice(_SK_ALPHABET) for _ in range(length))
