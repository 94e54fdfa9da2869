"""The vendor SDKs' AK/SK request signature (``SDK-HMAC-SHA256``), verified exactly.

What the official SDKs send (``huaweicloudsdkcore.signer.Signer``)::

    Authorization: SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<h1;h2;...>, Signature=<hex>
    X-Sdk-Date: 20261130T081500Z                      (UTC, basic ISO-8601)

    Signature      = hex(HMAC-SHA256(SK, StringToSign))
    StringToSign   = "SDK-HMAC-SHA256" "\\n" X-Sdk-Date "\\n" hex(SHA256(CanonicalRequest))
    CanonicalRequest =
        METHOD "\\n"
        CanonicalURI "\\n"        each path segment percent-decoded then encoded with
                                 only A-Z a-z 0-9 - _ . ~ left as is; always ends in "/"
        CanonicalQuery "\\n"      (key, value) pairs decoded, sorted, encoded the same
                                 way, "k=v" joined by "&"
        CanonicalHeaders "\\n"    "name:value" per signed header (lower-case name,
                                 trimmed value), in SignedHeaders order, each ending "\\n"
        SignedHeaders "\\n"       the names joined by ";"
        hex(SHA256(body))        over the raw bytes received

Everything here is pure (no I/O): the caller gives the request's parts and the SK.
Differences from the SDK are deliberate and only ever refuse: the payload hash is
always computed over the bytes received (an ``X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD``
is not honoured), ``host`` and ``x-sdk-date`` must be signed, the date must be within
``MAX_CLOCK_SKEW`` of the server's clock, and a signature is accepted once
(``replay_key`` and ``replay_ttl`` say what ``api.replay`` remembers, and how long).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "x-sdk-date"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_CLOCK_SKEW = timedelta(minutes=15)
REQUIRED_SIGNED_HEADERS = frozenset({"host", DATE_HEADER})

_DATE_RE = re.compile(r"\d{8}T\d{6}Z")
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^`|~0-9a-z-]+")  # RFC 9110 token, lower case
_MAX_SIGNED_HEADERS = 32


class SignatureError(Exception):
    """The signature is absent, malformed, stale or wrong. The message is safe to show
    (it never contains the SK, the expected signature or request data)."""


@dataclass(frozen=True)
class SdkAuthorization:
    access_key: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> SdkAuthorization:
    """``SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...``."""
    scheme, _, params = value.strip().partition(" ")
    if scheme != ALGORITHM:
        raise SignatureError(f"unsupported signing algorithm: use {ALGORITHM}")
    fields: dict[str, str] = {}
    for part in params.split(","):
        name, sep, field_value = part.strip().partition("=")
        if not sep or name in fields:
            raise SignatureError("malformed Authorization header")
        fields[name] = field_value.strip()
    if set(fields) != {"Access", "SignedHeaders", "Signature"}:
        raise SignatureError(
            "malformed Authorization header: Access, SignedHeaders and Signature are needed")
    access_key = fields["Access"]
    if not 1 <= len(access_key) <= 128 or not access_key.isascii() or not access_key.isalnum():
        raise SignatureError("malformed Authorization header: bad Access")
    signed = tuple(fields["SignedHeaders"].split(";"))
    if (len(signed) > _MAX_SIGNED_HEADERS or len(set(signed)) != len(signed)
            or not all(_HEADER_NAME_RE.fullmatch(h) for h in signed)):
        raise SignatureError("malformed Authorization header: bad SignedHeaders")
    if not REQUIRED_SIGNED_HEADERS <= set(signed):
        raise SignatureError("the signature must cover the host and x-sdk-date headers")
    signature = fields["Signature"]
    if not _SIGNATURE_RE.fullmatch(signature):
        raise SignatureError("malformed Authorization header: bad Signature")
    return SdkAuthorization(access_key, signed, signature)


def parse_sdk_date(value: str | None, now: datetime) -> str:
    """The X-Sdk-Date header, checked to be within ``MAX_CLOCK_SKEW`` of ``now``."""
    if value is None:
        raise SignatureError("missing X-Sdk-Date")
    if not _DATE_RE.fullmatch(value):
        raise SignatureError("X-Sdk-Date must be UTC in the form YYYYMMDDTHHMMSSZ")
    try:
        when = datetime.strptime(value, DATE_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise SignatureError("X-Sdk-Date is not a valid date") from None
    if abs(now - when) > MAX_CLOCK_SKEW:
        raise SignatureError("X-Sdk-Date is more than 15 minutes away from the server's "
                             "clock: sign the request again")
    return value


def _encode(text: str) -> str:
    return quote(text, safe="~")


def canonical_uri(raw_path: str) -> str:
    segments = unquote(raw_path).split("/")
    path = "/".join(_encode(s) for s in segments)
    return path if path.endswith("/") else path + "/"


def canonical_query(raw_query: str) -> str:
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((unquote(key), unquote(value)))
    pairs.sort()
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in pairs)


def _header_text(value: str) -> str:
    # HTTP servers decode header bytes as Latin-1; the SDK signs the text it sent as
    # UTF-8, so undo that where the bytes are UTF-8.
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def canonical_request(
    method: str, raw_path: str, raw_query: str, headers: Mapping[str, list[str]],
    signed_headers: tuple[str, ...], body_sha256: str,
) -> str:
    """``headers`` maps lower-case names to every value received for that name."""
    lines = []
    for name in signed_headers:
        values = headers.get(name) or []
        if len(values) != 1:
            raise SignatureError(f"signed header {name} is missing or repeated")
        lines.append(f"{name}:{_header_text(values[0]).strip()}")
    return "\n".join((
        method.upper(), canonical_uri(raw_path), canonical_query(raw_query),
        "\n".join(lines) + "\n", ";".join(signed_headers), body_sha256,
    ))


def string_to_sign(sdk_date: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{sdk_date}\n{digest}"


def sign(secret_key: str, text: str) -> str:
    return hmac.new(secret_key.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class SignedRequest:
    """The parts of a received request that the signature covers."""

    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, list[str]]  # lower-case name -> values
    body: bytes


def verify(request: SignedRequest, auth: SdkAuthorization, sdk_date: str,
           secret_key: str) -> None:
    """Raises ``SignatureError`` unless ``auth.signature`` is the SK's signature of the
    request (compared in constant time)."""
    canonical = canonical_request(
        request.method, request.raw_path, request.raw_query, request.headers,
        auth.signed_headers, hashlib.sha256(request.body).hexdigest())
    expected = sign(secret_key, string_to_sign(sdk_date, canonical))
    if not hmac.compare_digest(expected.encode("ascii"), auth.signature.encode("ascii")):
        raise SignatureError("the AK/SK signature is not valid")


# Beyond the end of the window: API hosts' clocks may differ a little.
REPLAY_MARGIN = timedelta(seconds=60)


def replay_key(auth: SdkAuthorization) -> str:
    """What identifies a signed request for replay protection: the access key and a
    hash of the signature (the signature itself is not kept)."""
    digest = hashlib.sha256(auth.signature.encode("ascii")).hexdigest()[:32]
    return f"{auth.access_key}:{digest}"


def replay_ttl(sdk_date: str, now: datetime) -> float:
    """Seconds until a signature dated ``sdk_date`` can no longer pass the date check
    (up to 30 minutes for a date 15 minutes ahead), plus ``REPLAY_MARGIN``."""
    when = datetime.strptime(sdk_date, DATE_FORMAT).replace(tzinfo=timezone.utc)
    remaining = max(0.0, (when + MAX_CLOCK_SKEW - now).total_seconds())
    return remaining + REPLAY_MARGIN.total_seconds()


def verify_request(
    request: SignedRequest, authorization: str, lookup_secret: Callable[[str], str | None],
    now: datetime,
) -> str:
    """The whole check in one call (the header's parts, the date, the SK, the
    signature); the access key on success. ``lookup_secret(ak)`` is the SK or None."""
    auth = parse_authorization(authorization)
    values = request.headers.get(DATE_HEADER) or []
    sdk_date = parse_sdk_date(values[0] if len(values) == 1 else None, now)
    secret = lookup_secret(auth.access_key)
    if secret is None:
        raise SignatureError("the AK/SK signature is not valid")
    verify(request, auth, sdk_date, secret)
    return auth.access_key
