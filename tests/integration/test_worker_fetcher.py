"""The SSRF-safe image download against a real local HTTP server (no Redis, no database).

Name resolution is faked where a test needs a host name to resolve somewhere particular;
the connection itself is always real.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from idcard.errors import ErrorCode, ServiceError
from idcard.settings import Settings
from worker.fetcher import fetch_url, is_public_address, pin_url

from .worker_support import LocalServer, local_server, send

BODY = b"\x89PNG\r\n\x1a\n" + b"pretend image " * 100


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"url_allow_hosts": ["127.0.0.1"], "url_read_timeout": 1.0,
                              "url_connect_timeout": 1.0, "url_total_timeout": 3.0,
                              "secret_key": None}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with local_server() as s:
        s.routes["/card.png"] = lambda h: send(h, 200, BODY)
        yield s


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Host name → addresses for names ending in ``.test``; lookups are recorded under
    ``calls``."""
    table: dict[str, list[str]] = {"calls": []}
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.endswith(".test"):
            table["calls"].append(name)
            if name not in table:
                raise socket.gaierror(socket.EAI_NONAME, "unknown")
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6,
                     "", (a, port)) for a in table[name]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return table


def _error(url: str, settings: Settings) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        fetch_url(url, settings)
    # A URL may name a person: never in a message.
    assert url not in info.value.message and "127.0.0.1" not in info.value.message
    return info.value


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2606:4700::1111", True),
    ("127.0.0.1", False), ("10.0.0.1", False), ("172.16.5.4", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False),
    ("224.0.0.1", False), ("255.255.255.255", False), ("192.0.2.1", False),
    ("::1", False), ("::", False), ("fe80::1", False), ("fc00::1", False),
    ("ff02::1", False), ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False),
    ("64:ff9b::7f00:1", False), ("2002:7f00:1::", False), ("::ffff:8.8.8.8", True),
])
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_allowed_host_is_fetched(server: LocalServer) -> None:
    assert fetch_url(server.url("/card.png"), _settings()) == BODY


@pytest.mark.parametrize("url", [
    "http://localhost:{port}/card.png",  # a name for loopback, not on the list
    "http://[::1]:{port}/card.png",
    "http://0.0.0.0:{port}/card.png",
    "http://2130706433:{port}/card.png",  # 127.0.0.1 as one decimal number
    "http://[::ffff:127.0.0.1]:{port}/card.png",
    "http://169.254.169.254/latest/meta-data/",
])
def test_private_destinations_are_refused(server: LocalServer, url: str) -> None:
    before = len(server.received)
    error = _error(url.format(port=server.port), _settings())
    assert error.code is ErrorCode.URL_REFUSED
    assert len(server.received) == before  # refused before connecting


def test_private_destinations_are_refused_without_allow_list(server: LocalServer) -> None:
    error = _error(server.url("/card.png"), _settings(url_allow_hosts=[]))
    assert error.code is ErrorCode.URL_REFUSED


@pytest.mark.parametrize("url", ["ftp://example.com/a.jpg", "file:///etc/passwd",
                                 "gopher://example.com/", "not a url", "http:///nohost"])
def test_other_schemes_and_junk_are_refused(url: str) -> None:
    assert _error(url, _settings()).code is ErrorCode.URL_REFUSED


def test_a_name_with_any_private_address_is_refused(resolver: dict) -> None:
    resolver["mixed.test"] = ["93.184.216.34", "10.0.0.7"]
    assert _error("http://mixed.test/a.jpg", _settings()).code is ErrorCode.URL_REFUSED


def test_unknown_host_is_a_download_failure(resolver: dict) -> None:
    assert _error("http://nowhere.test/a.jpg", _settings()).code is ErrorCode.URL_DOWNLOAD_FAILED


def test_connection_goes_to_the_checked_address(server: LocalServer, resolver: dict) -> None:
    # Resolved once, checked, then connected to by IP with the name in the Host header:
    # a second, different DNS answer (rebinding) is never asked for.
    resolver["cards.test"] = ["127.0.0.1"]
    settings = _settings(url_allow_hosts=["cards.test"])
    assert fetch_url(f"http://cards.test:{server.port}/card.png", settings) == BODY
    assert resolver["calls"] == ["cards.test"]
    assert server.received[-1].headers["Host"] == f"cards.test:{server.port}"


def test_https_keeps_the_name_for_sni_and_certificate(resolver: dict) -> None:
    resolver["bank.test"] = ["93.184.216.34"]
    target = pin_url("https://bank.test/kyc/a.jpg", _settings())
    assert str(target.connect_url) == "https://93.184.216.34/kyc/a.jpg"
    assert target.headers == {"Host": "bank.test"}
    assert target.extensions == {"sni_hostname": "bank.test"}


def test_redirects_are_followed_and_each_target_checked(server: LocalServer) -> None:
    port = server.port
    server.routes.update({
        "/r1": lambda h: send(h, 301, headers={"Location": "/r2"}),
        "/r2": lambda h: send(h, 307, headers={"Location": f"http://127.0.0.1:{port}/r3"}),
        "/r3": lambda h: send(h, 302, headers={"Location": "/card.png"}),
        "/r0": lambda h: send(h, 302, headers={"Location": "/r1"}),
        "/evil": lambda h: send(h, 302, headers={"Location": f"http://localhost:{port}/"}),
        "/file": lambda h: send(h, 302, headers={"Location": "file:///etc/passwd"}),
    })
    settings = _settings()
    assert fetch_url(server.url("/r1"), settings) == BODY  # three redirects: fine
    assert "too many redirects" in _error(server.url("/r0"), settings).message  # four
    assert _error(server.url("/evil"), settings).code is ErrorCode.URL_REFUSED
    assert _error(server.url("/file"), settings).code is ErrorCode.URL_REFUSED


def test_http_errors_fail(server: LocalServer) -> None:
    server.routes["/gone"] = lambda h: send(h, 410, b"gone")
    error = _error(server.url("/gone"), _settings())
    assert (error.code, error.message) == (ErrorCode.URL_DOWNLOAD_FAILED,
                                           "image URL could not be downloaded: HTTP 410")
    assert _error(server.url("/nothing-here"), _settings()).message.endswith("HTTP 404")


def test_size_cap_with_and_without_content_length(server: LocalServer) -> None:
    big = b"x" * 5000
    server.routes["/declared"] = lambda h: send(h, 200, big)
    server.routes["/streamed"] = lambda h: send(h, 200, big, length=False)
    server.routes["/exact"] = lambda h: send(h, 200, big[:4096], length=False)
    settings = _settings(url_max_bytes=4096)
    for path in ("/declared", "/streamed"):
        error = _error(server.url(path), settings)
        assert error.code is ErrorCode.URL_DOWNLOAD_FAILED
        assert error.message.endswith("image larger than 4 KB")
    assert fetch_url(server.url("/exact"), settings) == big[:4096]


def test_read_and_total_timeouts(server: LocalServer) -> None:
    def stall(h: Any) -> None:
        time.sleep(2)
        send(h, 200, b"late")

    def dribble(h: Any) -> None:
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        try:
            for _ in range(40):  # each byte in time, the whole far too slow
                h.wfile.write(b"x")
                h.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    server.routes["/stall"] = stall
    server.routes["/dribble"] = dribble
    settings = _settings(url_read_timeout=0.5, url_total_timeout=1.0)
    t0 = time.monotonic()
    assert _error(server.url("/stall"), settings).message.endswith("timed out")
    assert _error(server.url("/dribble"), settings).message.endswith("timed out")
    assert time.monotonic() - t0 < 4


def test_environment_proxies_are_ignored(server: LocalServer,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy would resolve the name itself and defeat the address check.
    monkeypatch.setenv("HTTP_PROXY", "http://10.255.255.1:3128")
    monkeypatch.setenv("ALL_PROXY", "http://10.255.255.1:3128")
    assert fetch_url(server.url("/card.png"), _settings()) == BODY
