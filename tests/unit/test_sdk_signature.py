"""``api.sdk_signature`` against the official SDK's ``Signer``: whatever the SDK signs
(odd paths, queries, header values), the server's canonical request is the same, and
any change is refused. No services needed."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api import sdk_signature as sig

pytest.importorskip("huaweicloudsdkcore", reason="the dev extra installs it")
from huaweicloudsdkcore.auth.credentials import BasicCredentials  # noqa: E402
from huaweicloudsdkcore.sdk_request import SdkRequest  # noqa: E402
from huaweicloudsdkcore.signer.signer import Signer  # noqa: E402
from requests.utils import requote_uri  # noqa: E402

AK, SK = "AKEXAMPLE0123456789Z", "sk-example-secret-0123456789abcdefghijkl"
NOW = datetime(2026, 11, 30, 8, 15, 0, tzinfo=timezone.utc)


def sdk_signed(method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str],
               body: bytes) -> tuple[sig.SignedRequest, str]:
    """What the server receives for a request the SDK signed: the request as sent on
    the wire (requests re-quotes the URI) and the Authorization header."""
    request = SdkRequest(method=method, schema="https", host="ocr.example:8443",
                         resource_path=path, query_params=list(query),
                         header_params={"Content-Type": "application/json;charset=UTF-8",
                                        "X-Sdk-Date": NOW.strftime(sig.DATE_FORMAT),
                                        **headers},
                         body=body)
    signed = Signer(BasicCredentials(AK, SK)).sign(request)
    wire = urlsplit(requote_uri(f"https://ocr.example:8443{signed.uri}"))
    received: dict[str, list[str]] = {}
    for name, value in signed.header_params.items():
        received.setdefault(name.lower(), []).append(value)  # as a server decodes them
    authorization = received.pop("authorization")[0]
    return sig.SignedRequest(method, wire.path, wire.query, received, body), authorization


def lookup(ak: str) -> str | None:
    return SK if ak == AK else None


def test_a_simple_signed_post_verifies() -> None:
    request, authorization = sdk_signed("POST", "/v2/p1/ocr/id-card", [],
                                        {"X-Project-Id": "p1"}, b'{"image": "x"}')
    assert sig.verify_request(request, authorization, lookup, NOW) == AK
    auth = sig.parse_authorization(authorization)
    assert auth.signed_headers == ("content-type", "host", "x-project-id", "x-sdk-date")


_segment = st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), max_size=8)
_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)


@settings(max_examples=300, deadline=None)
@given(segments=st.lists(_segment, min_size=1, max_size=4),
       query=st.lists(st.tuples(_text.filter(bool), _text), max_size=4),
       header=st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Zl", "Zp"]),
                      max_size=12),
       body=st.binary(max_size=64), method=st.sampled_from(["GET", "POST", "DELETE"]))
def test_whatever_the_sdk_signs_verifies(segments: list[str], query: list[tuple[str, str]],
                                         header: str, body: bytes, method: str) -> None:
    # As the SDK's client fills path parameters in: quote(value, safe="").
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    request, authorization = sdk_signed(method, path, query, {"X-Client-Note": header},
                                        body)
    assert sig.verify_request(request, authorization, lookup, NOW) == AK


@pytest.mark.parametrize("path", ["/v2/p1/ocr/id-card", "/v2/p1/ocr/id-card/",
                                  "/a b/c~d/é", "/v2/p%2F1/x", "/"])
def test_canonical_uri_matches_the_sdk(path: str) -> None:
    request = SdkRequest(method="GET", schema="https", host="h", resource_path=path,
                         query_params=[], header_params={}, body=b"")
    signer = Signer(BasicCredentials(AK, SK))
    assert sig.canonical_uri(path) == signer._process_canonical_uri(request)


def test_canonical_query_sorts_decoded_pairs_like_the_sdk() -> None:
    pairs = [("b", "2"), ("a", "z"), ("a", "y y"), ("~k", "+"), ("A", "")]
    request = SdkRequest(method="GET", schema="https", host="h", resource_path="/",
                         query_params=list(pairs), header_params={}, body=b"")
    expected = Signer._process_canonical_query_string(request)
    assert sig.canonical_query(expected) == expected
    assert sig.canonical_query("b=2&a=z&a=y%20y&%7Ek=%2B&A=") == expected


@pytest.mark.parametrize("change", ["method", "path", "query", "header", "body", "sk",
                                    "date", "signed-list"])
def test_any_change_is_refused(change: str) -> None:
    request, authorization = sdk_signed("POST", "/v2/p1/ocr/id-card", [("q", "1")],
                                        {"X-Project-Id": "p1"}, b'{"image": "x"}')
    fields = dict(method=request.method, raw_path=request.raw_path,
                  raw_query=request.raw_query, headers=dict(request.headers),
                  body=request.body)
    secret = SK
    if change == "method":
        fields["method"] = "PUT"
    elif change == "path":
        fields["raw_path"] = "/v2/p2/ocr/id-card"
    elif change == "query":
        fields["raw_query"] = "q=2"
    elif change == "header":
        fields["headers"]["x-project-id"] = ["p2"]
    elif change == "body":
        fields["body"] = b'{"image": "y"}'
    elif change == "sk":
        secret = SK[::-1]
    elif change == "date":
        later = (NOW + timedelta(seconds=1)).strftime(sig.DATE_FORMAT)
        fields["headers"]["x-sdk-date"] = [later]
    elif change == "signed-list":
        authorization = authorization.replace("content-type;", "")
    with pytest.raises(sig.SignatureError):
        sig.verify_request(sig.SignedRequest(**fields), authorization,
                           lambda _ak: secret, NOW)


@pytest.mark.parametrize(("offset", "ok"), [(0, True), (-899, True), (899, True),
                                            (-901, False), (901, False)])
def test_the_date_window_is_15_minutes(offset: int, ok: bool) -> None:
    value = (NOW + timedelta(seconds=offset)).strftime(sig.DATE_FORMAT)
    if ok:
        assert sig.parse_sdk_date(value, NOW) == value
    else:
        with pytest.raises(sig.SignatureError):
            sig.parse_sdk_date(value, NOW)


@pytest.mark.parametrize("value", [None, "", "2026-11-30T08:15:00Z", "20261130T081500",
                                   "2026113T081500Z", "20261340T081500Z", "٢٠٢٦١١٣٠T081500Z"])
def test_malformed_dates_are_refused(value: str | None) -> None:
    with pytest.raises(sig.SignatureError):
        sig.parse_sdk_date(value, NOW)


@pytest.mark.parametrize("value", [
    "", "SDK-HMAC-SHA256", "SDK-HMAC-SHA256 Access=A", "Bearer x",
    "SDK-HMAC-SHA256 Access=A, SignedHeaders=host;x-sdk-date, Signature=zz",
    "SDK-HMAC-SHA256 Access=A, SignedHeaders=host, Signature=" + "0" * 64,
    "SDK-HMAC-SHA256 Access=A, SignedHeaders=host;x-sdk-date;host, Signature=" + "0" * 64,
    "SDK-HMAC-SHA256 Access=A, Access=B, SignedHeaders=host;x-sdk-date, Signature="
    + "0" * 64,
    "SDK-HMAC-SHA256 Access=A-B, SignedHeaders=host;x-sdk-date, Signature=" + "0" * 64,
    "SDK-HMAC-SHA256 Access=A, SignedHeaders=Host;x-sdk-date, Signature=" + "0" * 64,
])
def test_malformed_authorization_is_refused(value: str) -> None:
    with pytest.raises(sig.SignatureError):
        sig.parse_authorization(value)


def test_an_unknown_access_key_reads_like_a_wrong_signature() -> None:
    request, authorization = sdk_signed("GET", "/v2/p1/ocr/id-card/jobs", [], {}, b"")
    with pytest.raises(sig.SignatureError) as unknown:
        sig.verify_request(request, authorization, lambda _ak: None, NOW)
    with pytest.raises(sig.SignatureError) as wrong:
        sig.verify_request(request, authorization, lambda _ak: "other", NOW)
    assert str(unknown.value) == str(wrong.value)


def test_the_payload_hash_is_over_the_bytes_received() -> None:
    # The SDK would sign "UNSIGNED-PAYLOAD" for a non-JSON body; the server never does.
    request = SdkRequest(method="POST", schema="https", host="h", resource_path="/x",
                         query_params=[], header_params={
                             "Content-Type": "application/octet-stream",
                             "X-Sdk-Date": NOW.strftime(sig.DATE_FORMAT)}, body=b"abc")
    signed = Signer(BasicCredentials(AK, SK)).sign(request)
    assert signed.header_params["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
    headers = {k.lower(): [v] for k, v in signed.header_params.items()}
    authorization = headers.pop("authorization")[0]
    received = sig.SignedRequest("POST", "/x", "", headers, b"abc")
    with pytest.raises(sig.SignatureError):
        sig.verify_request(received, authorization, lookup, NOW)
    assert hashlib.sha256(b"").hexdigest() == Signer._EMPTY_HASH


# --- replay protection -----------------------------------------------------------------


def test_the_replay_key_is_the_access_key_and_a_hash_of_the_signature() -> None:
    _, authorization = sdk_signed("GET", "/v2/p1/ocr/id-card/jobs", [], {}, b"")
    auth = sig.parse_authorization(authorization)
    key = sig.replay_key(auth)
    assert key.startswith(AK + ":") and auth.signature not in key
    other = sig.SdkAuthorization(auth.access_key, auth.signed_headers, "0" * 64)
    assert sig.replay_key(other) != key


@pytest.mark.parametrize(("offset", "remaining"), [(0, 900), (-600, 300), (900, 1800),
                                                   (-900, 0)])
def test_a_signature_is_remembered_until_its_date_leaves_the_window(
        offset: int, remaining: int) -> None:
    # The window is 15 minutes either side of X-Sdk-Date: a date 15 minutes ahead is
    # accepted for 30 minutes.
    date = (NOW + timedelta(seconds=offset)).strftime(sig.DATE_FORMAT)
    assert sig.replay_ttl(date, NOW) == remaining + sig.REPLAY_MARGIN.total_seconds()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_memory_guard_accepts_a_key_once_until_it_expires() -> None:
    from api.replay import MemoryReplayGuard

    clock = FakeClock()
    guard = MemoryReplayGuard(clock=clock)
    assert guard.add("a", 10) and not guard.add("a", 10)
    assert guard.add("b", 20)
    clock.now += 9.9
    assert not guard.add("a", 10)
    clock.now += 0.2  # "a" has expired, "b" has not
    assert guard.add("a", 10) and not guard.add("b", 20)
    guard.discard("b")  # a request refused before it did anything
    assert guard.add("b", 20)
    clock.now += 100
    guard.add("c", 1)
    assert len(guard) == 1  # expired keys are dropped as time passes
    # The coroutines the API awaits are the same thing.
    assert asyncio.run(guard.claim("d", 5)) and not asyncio.run(guard.claim("d", 5))
    asyncio.run(guard.release("d"))
    assert guard.add("d", 5)


def test_the_memory_guard_is_bounded_and_forgets_what_expires_first(
        caplog: pytest.LogCaptureFixture) -> None:
    from api.replay import MemoryReplayGuard

    guard = MemoryReplayGuard(max_entries=3, clock=FakeClock())
    for key, ttl in (("soon", 5), ("late", 50), ("mid", 20)):
        assert guard.add(key, ttl)
    guard.discard("late")
    assert guard.add("late", 50)  # a stale heap pair for "late" is skipped later
    assert guard.add("new", 30)  # full: "soon", the nearest to its end, is forgotten
    assert len(guard) == 3
    assert guard.add("soon", 5)  # (and now "mid" goes)
    assert not guard.add("late", 50) and not guard.add("new", 30)
    assert "forgotten before their window ends" in caplog.text
