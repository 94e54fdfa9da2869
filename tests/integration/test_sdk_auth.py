"""The AK/SK signature of the vendor's official Python SDK against the live API.

``huaweicloudsdkocr`` (from PyPI) is pointed at our endpoint and used unchanged: its
``RecognizeIdCardRequest`` must read a generated card exactly as a plain X-Auth-Token
call does. Tampered requests are produced with the SDK's own ``Signer`` and then
altered: each alteration must be ``APIGW.0301``.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from .api_support import TINY, Api, assert_error, b64, held
from .live_server import HoldingDispatcher

sdk_core = pytest.importorskip("huaweicloudsdkcore", reason="the dev extra installs it")
from huaweicloudsdkcore.auth.credentials import BasicCredentials  # noqa: E402
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException  # noqa: E402
from huaweicloudsdkcore.http.http_config import HttpConfig  # noqa: E402
from huaweicloudsdkcore.sdk_request import SdkRequest  # noqa: E402
from huaweicloudsdkcore.signer.signer import Signer  # noqa: E402
from huaweicloudsdkocr.v1 import (  # noqa: E402
    IdCardRequestBody,
    OcrClient,
    RecognizeIdCardRequest,
)

SDK_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


def sdk_client(base: str, ak: str, sk: str, project_id: str) -> OcrClient:
    """The official client aimed at our server: the project id is given, so the SDK
    never asks IAM for it; an http:// endpoint is used as is (no TLS on 127.0.0.1)."""
    config = HttpConfig.get_default_config()
    config.timeout = (5, 60)
    return (OcrClient.new_builder()
            .with_http_config(config)
            .with_credentials(BasicCredentials(ak, sk, project_id))
            .with_endpoints([base])
            .build())


_last_date: list[datetime] = []
_date_lock = threading.Lock()


def fresh_sdk_date() -> str:
    """Now, or one second past the last date handed out: every ``SignedCall`` of this
    process is a distinct request, as a client that signs each request anew makes them
    (the same request signed twice within one second is one signature, and the second
    is refused as a replay)."""
    with _date_lock:
        when = datetime.now(timezone.utc).replace(microsecond=0)
        if _last_date and when <= _last_date[0]:
            when = _last_date[0] + timedelta(seconds=1)
        _last_date[:] = [when]
        return when.strftime(SDK_DATE_FORMAT)


class SignedCall:
    """A request signed by the SDK's Signer, sent with httpx, alterable in between."""

    def __init__(self, base: str, method: str, path: str, *, ak: str, sk: str,
                 body: bytes = b"", query: list[tuple[str, str]] | None = None,
                 headers: dict[str, str] | None = None, sdk_date: str | None = None
                 ) -> None:
        self.base = base
        host = urlsplit(base).netloc
        header_params = {"Content-Type": "application/json", **(headers or {}),
                         "X-Sdk-Date": sdk_date or fresh_sdk_date()}
        request = SdkRequest(method=method, schema="http", host=host, resource_path=path,
                             query_params=list(query or []), header_params=header_params,
                             body=body)
        signed = Signer(BasicCredentials(ak, sk)).sign(request)
        self.method = method
        self.uri = signed.uri
        self.headers = dict(signed.header_params)
        self.body = signed.body or b""

    def send(self, **changes: Any) -> httpx.Response:
        headers = {**self.headers, **changes.get("headers", {})}
        for name in changes.get("drop", ()):
            headers.pop(name)
        return httpx.request(self.method, self.base + changes.get("uri", self.uri),
                             headers=headers, content=changes.get("body", self.body),
                             timeout=60)


def sdk_date(offset: timedelta = timedelta()) -> str:
    return (datetime.now(timezone.utc) + offset).strftime(SDK_DATE_FORMAT)


def _set_fields(obj: Any) -> Any:
    """An SDK model as the wire's dict: unset (None) attributes dropped."""
    if isinstance(obj, dict):
        return {k: _set_fields(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_set_fields(v) for v in obj]
    return obj


# --- the official SDK, unchanged ------------------------------------------------------


def test_the_official_sdk_reads_a_card_like_a_token_call(api: Api, card: Any) -> None:
    image = b64(card.image_bytes)
    plain = api.sync({"image": image, "return_verification": True})
    assert plain.status_code == 200, plain.text

    client = sdk_client(str(api.http.base_url), api.creds["ak"], api.creds["sk"], api.pid)
    request = RecognizeIdCardRequest(
        body=IdCardRequestBody(image=image, return_verification=True))
    response = client.recognize_id_card(request)

    assert response.status_code == 200
    via_sdk = _set_fields(response.to_json_object())["result"]
    assert via_sdk == plain.json()["result"]
    assert {k: via_sdk[k] for k in card.expected} == card.expected
    # The raw body too: the SDK's models drop nothing we send.
    assert json.loads(response.raw_content) == plain.json()


def test_the_sdk_sees_vendor_errors(api: Api) -> None:
    client = sdk_client(str(api.http.base_url), api.creds["ak"], api.creds["sk"], api.pid)
    with pytest.raises(ClientRequestException) as info:
        client.recognize_id_card(RecognizeIdCardRequest(body=IdCardRequestBody(
            image=TINY, url="https://example.com/a.jpg")))
    assert info.value.status_code == 400 and info.value.error_code == "AIS.0101"

    wrong = sdk_client(str(api.http.base_url), api.creds["ak"], "x" * 40, api.pid)
    with pytest.raises(ClientRequestException) as info:
        wrong.recognize_id_card(RecognizeIdCardRequest(body=IdCardRequestBody(image=TINY)))
    assert info.value.status_code == 401 and info.value.error_code == "APIGW.0301"


def test_an_sdk_credential_reaches_its_own_project_only(api: Api, other: Api) -> None:
    # B's AK/SK aimed at A's project id: the SDK puts A's id in the path and in
    # X-Project-Id, and signs it all correctly with B's SK.
    client = sdk_client(str(api.http.base_url), other.creds["ak"], other.creds["sk"],
                        api.pid)
    with pytest.raises(ClientRequestException) as info:
        client.recognize_id_card(RecognizeIdCardRequest(body=IdCardRequestBody(image=TINY)))
    assert info.value.status_code == 401 and info.value.error_code == "APIGW.0301"


# --- hand-signed requests, then tampered ----------------------------------------------


@pytest.fixture
def signed_sync(api: Api) -> SignedCall:
    body = json.dumps({"image": TINY}).encode()
    return SignedCall(str(api.http.base_url), "POST", f"/v2/{api.pid}/ocr/id-card",
                      ak=api.creds["ak"], sk=api.creds["sk"], body=body,
                      headers={"X-Project-Id": api.pid})


def test_a_correct_signature_is_accepted(signed_sync: SignedCall) -> None:
    # TINY fails in the worker: authentication passed, the request ran.
    assert_error(signed_sync.send(), 400, "AIS.0103")


def test_a_signature_within_the_window_is_accepted(api: Api) -> None:
    for minutes in (-14, 14):
        call = SignedCall(str(api.http.base_url), "POST", f"/v2/{api.pid}/ocr/id-card",
                          ak=api.creds["ak"], sk=api.creds["sk"],
                          body=json.dumps({"image": TINY}).encode(),
                          sdk_date=sdk_date(timedelta(minutes=minutes)))
        assert_error(call.send(), 400, "AIS.0103")


INVALID = "the AK/SK signature is not valid"  # the same for an unknown AK: no probing
WINDOW = "X-Sdk-Date is more than 15 minutes away"
TAMPERED = {
    "wrong-sk": INVALID, "body-changed": INVALID, "stale-date": WINDOW,
    "future-date": WINDOW, "unknown-ak": INVALID,
    "signed-header-missing": "signed header x-project-id is missing",
    "date-header-changed": INVALID, "path-changed": INVALID, "query-added": INVALID,
    "signature-flipped": INVALID, "upper-case-hex": "bad Signature",
    "host-not-signed": "must cover the host and x-sdk-date",
    "other-algorithm": "unsupported Authorization scheme", "project-id-changed": INVALID,
}


@pytest.mark.parametrize("tamper", list(TAMPERED))
def test_a_tampered_signature_is_apigw0301(api: Api, signed_sync: SignedCall,
                                           tamper: str) -> None:
    base, path = str(api.http.base_url), f"/v2/{api.pid}/ocr/id-card"
    body = signed_sync.body
    keys = {"ak": api.creds["ak"], "sk": api.creds["sk"]}
    if tamper == "wrong-sk":
        r = SignedCall(base, "POST", path, ak=keys["ak"], sk="W" * 40, body=body).send()
    elif tamper == "body-changed":
        r = signed_sync.send(body=body.replace(b"}", b', "side": "back"}'))
    elif tamper in ("stale-date", "future-date"):
        minutes = -16 if tamper == "stale-date" else 16
        r = SignedCall(base, "POST", path, **keys, body=body,
                       sdk_date=sdk_date(timedelta(minutes=minutes))).send()
    elif tamper == "unknown-ak":
        r = SignedCall(base, "POST", path, ak="A" * 20, sk=keys["sk"], body=body).send()
    elif tamper == "signed-header-missing":
        r = signed_sync.send(drop=["X-Project-Id"])
    elif tamper == "date-header-changed":
        r = signed_sync.send(headers={"X-Sdk-Date": sdk_date(timedelta(seconds=-5))})
    elif tamper == "path-changed":
        r = signed_sync.send(uri=f"/v2/{api.pid}/ocr/id-card/jobs")
    elif tamper == "query-added":
        r = signed_sync.send(uri=signed_sync.uri + "?side=back")
    elif tamper == "signature-flipped":
        auth = signed_sync.headers["Authorization"]
        last = auth[-1]
        flipped = auth[:-1] + ("0" if last != "0" else "1")
        r = signed_sync.send(headers={"Authorization": flipped})
    elif tamper == "upper-case-hex":
        auth = signed_sync.headers["Authorization"]
        head, _, signature = auth.rpartition("=")
        r = signed_sync.send(headers={"Authorization": f"{head}={signature.upper()}"})
    elif tamper == "host-not-signed":
        auth = signed_sync.headers["Authorization"]
        r = signed_sync.send(headers={"Authorization": auth.replace("host;", "")})
    elif tamper == "other-algorithm":
        auth = signed_sync.headers["Authorization"]
        r = signed_sync.send(headers={"Authorization": auth.replace("SDK-HMAC-SHA256",
                                                                    "SDK-HMAC-SM3")})
    elif tamper == "project-id-changed":
        r = signed_sync.send(headers={"X-Project-Id": "0" * 32})
    else:
        raise AssertionError(tamper)
    body_out = assert_error(r, 401, "APIGW.0301")
    assert TAMPERED[tamper] in body_out["error_msg"]
    assert api.creds["sk"] not in body_out["error_msg"]


def test_signed_gets_with_a_query_and_deletes(api: Api, dispatcher: HoldingDispatcher
                                              ) -> None:
    base, keys = str(api.http.base_url), {"ak": api.creds["ak"], "sk": api.creds["sk"]}
    with held(dispatcher):
        job_id = api.submitted({"image": TINY, "client_reference": "signed"})
        listed = SignedCall(base, "GET", f"/v2/{api.pid}/ocr/id-card/jobs", **keys,
                            query=[("status", "queued"), ("limit", "5")]).send()
        assert listed.status_code == 200, listed.text
        assert job_id in {j["job_id"] for j in listed.json()["jobs"]}
        # The query is covered too: another limit is another request.
        changed = SignedCall(base, "GET", f"/v2/{api.pid}/ocr/id-card/jobs", **keys,
                             query=[("limit", "5")])
        assert_error(changed.send(uri=changed.uri.replace("limit=5", "limit=6")), 401,
                     "APIGW.0301")
        cancelled = SignedCall(base, "DELETE", f"/v2/{api.pid}/ocr/id-card/jobs/{job_id}",
                               **keys).send()
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    events = api.http.get(f"{api.jobs}/{job_id}/events").json()["events"]
    assert [e["actor"] for e in events if e["event"] == "cancelled"] == ["api:aksk"]


def test_a_signed_body_over_the_limit_is_refused_unread(api: Api) -> None:
    call = SignedCall(str(api.http.base_url), "POST", f"/v2/{api.pid}/ocr/id-card",
                      ak=api.creds["ak"], sk=api.creds["sk"],
                      body=b'{"image": "' + b"A" * (15 * 1024 * 1024) + b'"}')
    assert_error(call.send(), 400, "AIS.0103")
