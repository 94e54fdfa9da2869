"""Downloading a job's image URL, safely: the worker must not become a proxy into our network.

Every hop (the URL and each redirect target) is checked before any byte is sent: http or
https only, and the host must resolve to public addresses only, unless it is listed in
IDCARD_URL_ALLOW_HOSTS. The connection then goes to the very address that was checked
(the URL is rewritten to the IP, with the Host header and TLS SNI/certificate check kept
on the name), so a DNS answer that changes between check and connect cannot redirect us.

Errors are ``ServiceError``s whose messages never contain the URL (it may name a person).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from idcard.errors import ErrorCode, ServiceError
from idcard.settings import Settings, get_settings

MAX_REDIRECTS = 3
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_SCHEMES = {"http": 80, "https": 443}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
USER_AGENT = "idcard-ocr/1"

# httpx logs every request line at INFO (httpcore more at DEBUG): a URL's path may name
# a person, and our own logs say what happened without it.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _refused(why: str) -> ServiceError:
    return ServiceError(ErrorCode.URL_REFUSED, f"image URL refused: {why}")


def _failed(why: str) -> ServiceError:
    return ServiceError(ErrorCode.URL_DOWNLOAD_FAILED, f"image URL could not be downloaded: {why}")


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    # IPv6 forms that carry an IPv4 address the network may route to: 6to4 and NAT64.
    # Python 3.11's is_global does not look inside them.
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress) -> bool:
    """False for loopback, private, link-local, multicast, reserved, unspecified, shared
    (CGNAT), documentation ranges, and IPv6 wrappings of any of those."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return is_public_address(ip.ipv4_mapped)  # ::ffff:a.b.c.d is a.b.c.d
    inner = _embedded_ipv4(ip)
    if inner is not None and not is_public_address(inner):
        return False
    return ip.is_global and not (
        ip.is_multicast or ip.is_loopback or ip.is_link_local or ip.is_private
        or ip.is_reserved or ip.is_unspecified
    )


@dataclass(frozen=True)
class PinnedTarget:
    """A checked URL and how to reach exactly the address that was checked."""

    url: httpx.URL  # as given (for resolving relative redirects)
    connect_url: httpx.URL  # the same URL with the host replaced by the checked IP
    headers: dict[str, str] = field(default_factory=dict)  # Host
    extensions: dict[str, Any] = field(default_factory=dict)  # sni_hostname for https


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        # ADDRCONFIG: no IPv6 answers on a host without IPv6, where the first (and only
        # tried) address would then be unreachable.
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_ADDRCONFIG)
    except (socket.gaierror, UnicodeError, OSError):
        raise _failed("host not found") from None
    addresses: list[IPAddress] = []
    for info in infos:
        # Drop an IPv6 zone ("fe80::1%eth0"): ip_address() refuses it, and the address
        # without it is what we judge.
        addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if addr not in addresses:
            addresses.append(addr)
    if not addresses:
        raise _failed("host not found")
    return addresses


def pin_url(url: str | httpx.URL, settings: Settings | None = None) -> PinnedTarget:
    """Check ``url`` against the SSRF rules and pin it to one resolved address.

    ``IDC.0202`` for a refused URL (not http(s), no host, a non-public address for a host
    outside IDCARD_URL_ALLOW_HOSTS); ``IDC.0201`` when the host does not resolve.
    """
    settings = settings or get_settings()
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise _refused("not a valid URL") from None
    if parsed.scheme not in _SCHEMES:
        raise _refused("only http and https are allowed")
    try:
        name = parsed.raw_host.decode("ascii").rstrip(".").lower()
    except UnicodeDecodeError:
        raise _refused("not a valid host") from None
    if not name:
        raise _refused("no host")
    port = parsed.port or _SCHEMES[parsed.scheme]
    literal = name.strip("[]")
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(literal)]
        is_name = False
    except ValueError:
        addresses = _resolve(name, port)
        is_name = True
    allowed = name in settings.url_allow_hosts or literal in settings.url_allow_hosts
    if not allowed and not all(is_public_address(a) for a in addresses):
        # All, not any: a name answering one public and one private address is refused,
        # rather than trusting which one the connection would pick.
        raise _refused("the host is not a public address")
    ip = addresses[0]
    connect_url = parsed.copy_with(host=str(ip))
    headers = {"Host": parsed.netloc.decode("ascii")}
    extensions: dict[str, Any] = {}
    if parsed.scheme == "https" and is_name:
        # The certificate is checked against the name, not the IP we connect to.
        extensions["sni_hostname"] = name
    return PinnedTarget(parsed, connect_url, headers, extensions)


def new_client(settings: Settings | None = None, *, timeout: float | None = None) -> httpx.Client:
    """An httpx client for pinned requests: no proxies from the environment (a proxy would
    resolve the name itself), no automatic redirects (each hop is checked by us)."""
    settings = settings or get_settings()
    if timeout is None:
        limits = httpx.Timeout(connect=settings.url_connect_timeout,
                               read=settings.url_read_timeout,
                               write=settings.url_read_timeout,
                               pool=settings.url_connect_timeout)
    else:
        limits = httpx.Timeout(timeout)
    return httpx.Client(timeout=limits, follow_redirects=False, trust_env=False,
                        headers={"User-Agent": USER_AGENT})


def _size(n: int) -> str:
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def _read_capped(response: httpx.Response, cap: int, deadline: float) -> bytes:
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise _failed(f"image larger than {_size(cap)}")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > cap:
            raise _failed(f"image larger than {_size(cap)}")
        if time.monotonic() > deadline:
            raise _failed("timed out")
        chunks.append(chunk)
    return b"".join(chunks)


def fetch_url(url: str, settings: Settings | None = None) -> bytes:
    """The body of ``url`` (at most IDCARD_URL_MAX_BYTES), following up to three checked
    redirects within IDCARD_URL_TOTAL_TIMEOUT.

    Raises ``ServiceError``: ``IDC.0202`` refused, ``IDC.0201`` download failed.
    """
    settings = settings or get_settings()
    deadline = time.monotonic() + settings.url_total_timeout
    target = pin_url(url, settings)
    redirects = 0
    with new_client(settings) as client:
        while True:
            request = client.build_request(
                "GET", target.connect_url,
                # An image gains nothing from compression; asking for none keeps a
                # decompression bomb out (the cap counts decoded bytes).
                headers={**target.headers, "Accept-Encoding": "identity"},
                extensions=target.extensions,
            )
            try:
                response = client.send(request, stream=True)
            except httpx.TimeoutException:
                raise _failed("timed out") from None
            except httpx.HTTPError:
                raise _failed("connection failed") from None
            try:
                if response.status_code in _REDIRECT_CODES:
                    if redirects == MAX_REDIRECTS:
                        raise _failed("too many redirects")
                    redirects += 1
                    location = response.headers.get("Location")
                    if not location:
                        raise _failed(f"HTTP {response.status_code} without a Location")
                    try:
                        next_url = target.url.join(location)
                    except (httpx.InvalidURL, ValueError):
                        raise _refused("invalid redirect") from None
                    if time.monotonic() > deadline:
                        raise _failed("timed out")
                    target = pin_url(next_url, settings)
                    continue
                if not 200 <= response.status_code < 300:
                    raise _failed(f"HTTP {response.status_code}")
                try:
                    return _read_capped(response, settings.url_max_bytes, deadline)
                except httpx.TimeoutException:
                    raise _failed("timed out") from None
                except httpx.HTTPError:
                    raise _failed("connection failed") from None
            finally:
                response.close()
