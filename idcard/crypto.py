"""Encryption of personal data at rest, keyed hashes, and new credentials.

Every entry of IDCARD_SECRET_KEY yields, through HKDF-SHA256 with a purpose label, one
AES-256-GCM key, one Fernet key (values written before AES-GCM) and one HMAC key. The
first entry encrypts and hashes; all entries decrypt and are tried when looking a hash
up, so a key can be rotated in by prepending it.

Stored form: ``0xA7 | 96-bit random nonce | AES-256-GCM ciphertext and 128-bit tag``.
AES-GCM replaced Fernet (AES-128-CBC + HMAC-SHA256 over base64 text) because Fernet
spent 2.7 ms on each 200 KB photo each way on this machine (base64 both ways, a
separate MAC pass) against 0.03 ms for AES-GCM, on the synchronous route's path.
Random nonces are safe for 2^32 values per key (NIST SP 800-38D), i.e. a million
photos a night for over ten years; rotating the key starts again. Fernet values (binary
tokens starting 0x80, or older base64 text starting ``gAAAAA``) still decrypt, and
``rotate`` (``idcard-ocr rekey``) rewrites them in the current form.
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

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from idcard.settings import get_settings

_SALT = b"idcard-ocr/v1"


class DecryptionError(RuntimeError):
    """Stored data cannot be decrypted with any key of IDCARD_SECRET_KEY."""


@dataclass(frozen=True)
class _Keyring:
    aead: tuple[AESGCM, ...]  # current first
    fernet: MultiFernet
    mac_keys: tuple[bytes, ...]  # current first


def _derive(secret: str, purpose: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=purpose)
    return hkdf.derive(secret.encode("utf-8"))


@lru_cache(maxsize=8)
def _keyring_for(secret_keys: tuple[str, ...]) -> _Keyring:
    fernets = [Fernet(base64.urlsafe_b64encode(_derive(k, b"fernet"))) for k in secret_keys]
    return _Keyring(
        aead=tuple(AESGCM(_derive(k, b"aes-256-gcm")) for k in secret_keys),
        fernet=MultiFernet(fernets),
        mac_keys=tuple(_derive(k, b"hmac") for k in secret_keys),
    )


def _keyring() -> _Keyring:
    # Read the settings on every call so that a changed environment (tests, rotation
    # after cache_clear) takes effect; the derivation itself is cached.
    return _keyring_for(get_settings().secret_keys)


# The version byte of the stored form; a Fernet token's is 0x80 (binary) or b"g" (its
# base64 text), so the three never collide.
_AES_GCM_V1 = b"\xa7"
_NONCE_BYTES = 12
_FERNET_VERSION = b"\x80"


def _as_token(stored: bytes) -> bytes:
    data = bytes(stored)
    return base64.urlsafe_b64encode(data) if data[:1] == _FERNET_VERSION else data


def encrypt(data: bytes) -> bytes:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return _AES_GCM_V1 + nonce + _keyring().aead[0].encrypt(nonce, bytes(data), None)


def decrypt(stored: bytes) -> bytes:
    data = bytes(stored)  # a driver may hand bytea over as a memoryview
    if data[:1] == _AES_GCM_V1:
        nonce, sealed = data[1:1 + _NONCE_BYTES], data[1 + _NONCE_BYTES:]
        for key in _keyring().aead:
            try:
                return key.decrypt(nonce, sealed, None)
            except InvalidTag:
                continue
        raise DecryptionError(
            "stored data cannot be decrypted: its key is not in IDCARD_SECRET_KEY")
    try:
        return _keyring().fernet.decrypt(_as_token(data))
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
    """Re-encrypt ``stored`` (any form, any configured key) with the current key, in
    the current form."""
    try:
        return encrypt(decrypt(stored))
    except DecryptionError:
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
