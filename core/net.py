"""SSRF-safe download of a caller-supplied ``https://`` URL: :func:`fetch_https`.

The worker holds storage credentials and may run next to a cloud metadata endpoint, so an input
URL must never make it talk to a non-public address. The guard works where the connection is
made: the host is resolved once, every resolved address is checked, the socket is opened to a
checked address (never re-resolved), and TLS still verifies the certificate against the URL's
hostname (SNI + hostname check). Every redirect hop goes through the same checks.

Why hand-written (on urllib3) instead of a library:

* ``runpod.serverless.utils.rp_ssrf`` (runpod 1.12) does resolve once, pin the IP with SNI kept
  and re-check redirects, but ``core`` must not import ``runpod``, and it lacks what we need:
  no total deadline (only requests' per-socket-operation timeout, so a server dripping one byte
  per few seconds holds the worker indefinitely), ``allow_private`` only as a process-wide
  environment variable, no resolver seam, no retries, redirects followed inside one call so
  per-hop scheme/port/userinfo rules cannot be applied (a redirect to ``http://`` or to another
  port passes), ``http`` allowed by default, and its error messages echo the whole URL (query
  string with signatures included). Its IPv6 check also trusts ``is_global`` for NAT64/6to4.
* requests / httpx / urllib3 offer per-operation timeouts and no address policy.

So this is a small guard on urllib3's ``HTTPConnection``/``HTTPSConnection`` (in the lock through
requests/botocore): each connection is built with ``host=<checked IP>`` and
``server_hostname=<URL host>``; a watchdog timer shuts the socket down at the deadline, which
bounds the TLS handshake, a header drip and a body drip alike (those pieces: :mod:`core.netconn`). urllib3 is used without a pool or
proxy support, so ``HTTP(S)_PROXY`` cannot re-route a request around the pinning.

Units: sizes in bytes, times in seconds.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from urllib.parse import quote, urljoin, urlsplit

from urllib3.connection import HTTPConnection
from urllib3.exceptions import HTTPError as Urllib3Error

from core.errors import ErrorCode, JobError
from core.netconn import (_NO_SUCH_HOST, IPAddress, _Deadline, _default_ssl_context,
                          _getaddrinfo, _PinnedHTTP, _PinnedHTTPS, is_public_address)

#: ``resolver(host, port) -> [ip, ...]``; the default uses :func:`socket.getaddrinfo`.
Resolver = Callable[[str, int], list[str]]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024  # bytes per read
_MAX_URL = 8192  # characters
_USER_AGENT = "maskpaint-fetch/1"

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


def fetch_https(
    url: str,
    *,
    max_bytes: int,
    deadline_s: float = 20.0,
    allow_private: bool = False,
    max_redirects: int = 3,
    retries: int = 2,
    allow_http: bool = False,
    resolver: Resolver | None = None,
    field: str = "image",
    allow_any_port: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    backoff_s: float = 0.25,
) -> bytes:
    """Download ``url`` and return its body, refusing any non-public destination.

    Args:
        url: ``https://host[:443]/path?query``; no userinfo.
        max_bytes: largest body accepted, bytes (checked on ``Content-Length`` and while reading).
        deadline_s: total wall-clock budget, seconds, for resolution, connects, TLS, all reads,
            redirects, retries and backoff together.
        allow_private: deployment setting for self-hosted use; lifts only the address-range check
            (scheme, userinfo, port and numeric-spelling rules still apply).
        max_redirects: redirects followed at most; each hop is re-checked.
        retries: extra attempts after a 5xx or a network error (the whole chain is re-fetched),
            with backoff ``backoff_s * 2**n`` seconds, all within ``deadline_s``.
        allow_http: also accept ``http://`` (port 80). Tests / self-hosted only.
        resolver: ``(host, port) -> [ip strings]``; the seam for tests. Default: getaddrinfo.
        field: request field named in error messages (``"image"``, ``"mask"``).
        allow_any_port: accept a non-default port. Tests (loopback server) / self-hosted only.
        ssl_context: trust store override for tests; it must verify certificates and hostnames.
        backoff_s: first retry pause, seconds.

    Raises:
        JobError: ``invalid_input`` (malformed URL); ``blocked_url`` (scheme, userinfo, port,
            numeric host spelling, non-public address, bad or too many redirects);
            ``input_not_found`` (404/410); ``image_too_large`` (over ``max_bytes``);
            ``input_fetch_failed`` (other 4xx, TLS verification failure, or an unresolvable
            host: not retryable; 5xx, network errors and the deadline: retryable).
        ValueError: bad arguments (a caller bug, not a job error).

    Messages name ``field`` and the reason and at most the scheme and host, never the path,
    query string or userinfo.
    """
    if max_bytes < 0 or deadline_s <= 0 or max_redirects < 0 or retries < 0 or backoff_s < 0:
        raise ValueError("max_bytes, deadline_s, max_redirects, retries, backoff_s out of range")
    if ssl_context is not None and (
        ssl_context.verify_mode != ssl.CERT_REQUIRED or not ssl_context.check_hostname
    ):
        raise ValueError("ssl_context must verify certificates and hostnames")
    f = _Fetch(
        field=field, max_bytes=max_bytes, deadline_s=deadline_s, allow_private=allow_private,
        max_redirects=max_redirects, allow_http=allow_http, allow_any_port=allow_any_port,
        resolver=resolver or _getaddrinfo, ssl_context=ssl_context or _default_ssl_context(),
    )
    start = f.parse(url, redirect=False)  # URL errors surface before any network use
    f.deadline = _Deadline(deadline_s)  # the clock starts here
    try:
        attempt = 0
        while True:
            try:
                return f.chain(start)
            except _Transient as e:
                if f.deadline.expired or f.deadline.remaining() <= 0:
                    raise f.timed_out() from None
                pause = backoff_s * 2**attempt
                if attempt >= retries or pause >= f.deadline.remaining():
                    raise f.err(ErrorCode.input_fetch_failed,
                                f"{e.reason} (after {attempt + 1} attempt(s))") from None
                time.sleep(pause)
                attempt += 1
    finally:
        f.deadline.close()


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # lower-case ASCII, no brackets, no trailing dot
    port: int
    default_port: bool
    path: str  # path + query, ASCII
    ip: IPAddress | None  # set when the host is an IP literal

    @property
    def origin(self) -> str:
        """``scheme://host``: the most of a URL an error message may show."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.default_port else f"{host}:{self.port}"


class _Transient(Exception):
    """A failure worth retrying (5xx, network error); ``reason`` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Fetch:
    field: str
    max_bytes: int
    deadline_s: float
    allow_private: bool
    max_redirects: int
    allow_http: bool
    allow_any_port: bool
    resolver: Resolver
    ssl_context: ssl.SSLContext
    deadline: _Deadline = None  # type: ignore[assignment]  # set once the URL has parsed

    def err(self, code: ErrorCode, msg: str, retryable: bool | None = None) -> JobError:
        return JobError(code, f"{self.field}: {msg}", field=self.field, retryable=retryable)

    def timed_out(self) -> JobError:
        return self.err(ErrorCode.input_fetch_failed,
                        f"download did not finish within {self.deadline_s:g} s", retryable=True)

    # -- URL rules ---------------------------------------------------------------------------

    def parse(self, url: object, *, redirect: bool) -> _Target:
        """Check scheme, userinfo, host syntax and port; no network. Raises JobError."""
        what = "redirect target" if redirect else "URL"
        malformed = ErrorCode.blocked_url if redirect else ErrorCode.invalid_input
        if (
            not isinstance(url, str)
            or not url
            or len(url) > _MAX_URL
            or any(c <= " " or c in "\x7f\\" for c in url)
        ):
            raise self.err(malformed, f"{what} is not a valid URL")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise self.err(malformed, f"{what} is not a valid URL") from None
        scheme = parts.scheme.lower()
        allowed = ("https", "http") if self.allow_http else ("https",)
        if not scheme:
            raise self.err(malformed, f"{what} is not an absolute URL")
        if scheme not in allowed:
            raise self.err(ErrorCode.blocked_url, f"{what}: only {'/'.join(allowed)} allowed")
        if not parts.netloc:
            raise self.err(malformed, f"{what} is not an absolute URL")
        if "@" in parts.netloc:
            raise self.err(ErrorCode.blocked_url, f"{what}: credentials in URLs are not allowed")
        host = parts.hostname or ""
        if not host or "%" in host:
            raise self.err(malformed, f"{what} has no valid host")
        ip: IPAddress | None = None
        if parts.netloc.split(":")[0].startswith("["):  # bracketed IPv6 literal
            try:
                ip = ipaddress.IPv6Address(host)
            except ValueError:
                raise self.err(malformed, f"{what} has no valid host") from None
        else:
            try:
                host = host.encode("idna").decode("ascii") if not host.isascii() else host
            except UnicodeError:
                raise self.err(malformed, f"{what} has no valid host") from None
            host = host.rstrip(".")
            labels = host.split(".")
            if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
                raise self.err(malformed, f"{what} has no valid host")
            if _NUMERIC_LABEL.match(labels[-1]):
                # Only canonical dotted quads: 2130706433, 0177.0.0.1, 0x7f.1 or 127.1 are
                # read differently by different parsers (a classic SSRF bypass).
                try:
                    ip = ipaddress.IPv4Address(host)
                except ValueError:
                    raise self.err(ErrorCode.blocked_url,
                                   f"{what}: non-canonical numeric host") from None
        default = 443 if scheme == "https" else 80
        if port == 0:
            raise self.err(malformed, f"{what} has an invalid port")
        if port is not None and port != default and not self.allow_any_port:
            raise self.err(ErrorCode.blocked_url, f"{what}: only the default port is allowed")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        path = re.sub(r"[^\x21-\x7e]", lambda m: quote(m.group()), path)
        return _Target(scheme, host, port or default, port in (None, default), path, ip)

    # -- network -------------------------------------------------------------------------------

    def chain(self, target: _Target) -> bytes:
        """Follow redirects from ``target``; return the body. Raises JobError or _Transient."""
        for _hop in range(self.max_redirects + 1):
            conn = self.connect(target)
            try:
                result = self.exchange(conn, target)
            finally:
                conn.close()
                self.deadline.release()
            if isinstance(result, bytes):
                return result
            target = result
        raise self.err(ErrorCode.blocked_url, f"more than {self.max_redirects} redirects")

    def addresses(self, t: _Target) -> list[IPAddress]:
        """Resolve once (bounded by the deadline) and check every address."""
        if t.ip is not None:
            ips: list[IPAddress] = [t.ip]
        else:
            box: dict[str, object] = {}

            def run() -> None:
                try:
                    box["ok"] = list(self.resolver(t.host, t.port))
                except BaseException as e:  # handed to the caller's thread
                    box["error"] = e

            worker = threading.Thread(target=run, name="maskpaint-resolve", daemon=True)
            worker.start()
            worker.join(max(self.deadline.remaining(), 0.0))
            if worker.is_alive():
                raise _Transient(f"name resolution for {t.origin} timed out")
            error = box.get("error")
            if isinstance(error, socket.gaierror) and error.errno in _NO_SUCH_HOST:
                raise self.err(ErrorCode.input_fetch_failed, f"{t.origin} does not resolve",
                               retryable=False)
            if error is not None:
                raise _Transient(f"name resolution for {t.origin} failed")
            try:
                ips = [ipaddress.ip_address(a) for a in box["ok"]]  # type: ignore[union-attr]
            except (ValueError, TypeError):
                raise self.err(ErrorCode.blocked_url,
                               f"{t.origin} resolved to a non-address") from None
            if not ips:
                raise self.err(ErrorCode.input_fetch_failed, f"{t.origin} does not resolve",
                               retryable=False)
        if not self.allow_private and not all(is_public_address(ip) for ip in ips):
            raise self.err(ErrorCode.blocked_url, f"{t.origin} is not a public address")
        return ips

    def connect(self, t: _Target) -> HTTPConnection:
        """Open a connection to a checked address of ``t`` (first one that answers)."""
        ips = self.addresses(t)
        failure = "could not connect"
        for ip in ips:
            if self.deadline.remaining() <= 0:
                break
            kw: dict[str, object] = {"timeout": self.deadline.remaining(),
                                     "deadline": self.deadline}
            if t.scheme == "https":
                kw.update(server_hostname=t.host, ssl_context=self.ssl_context)
                conn: HTTPConnection = _PinnedHTTPS(str(ip), t.port, **kw)
            else:
                conn = _PinnedHTTP(str(ip), t.port, **kw)
            try:
                conn.connect()
                return conn
            except ssl.SSLCertVerificationError:
                conn.close()
                raise self.err(ErrorCode.input_fetch_failed,
                               f"TLS certificate of {t.origin} failed verification",
                               retryable=False) from None
            except (OSError, Urllib3Error):
                conn.close()
                self.deadline.release()
                failure = f"could not connect to {t.origin}"
        raise _Transient(failure)

    def exchange(self, conn: HTTPConnection, t: _Target) -> bytes | _Target:
        """Send the GET; return the body, or the next hop for a redirect."""
        headers = {"Host": t.host_header, "User-Agent": _USER_AGENT, "Accept": "image/*",
                   "Accept-Encoding": "identity", "Connection": "close"}
        resp = None
        try:
            conn.request("GET", t.path, headers=headers, preload_content=False,
                         decode_content=False)
            resp = conn.getresponse()
            status = resp.status
            if status in _REDIRECTS:
                location = resp.headers.get("Location")
                if not location:
                    raise self.err(ErrorCode.input_fetch_failed,
                                   f"{t.origin} redirected without a Location", retryable=False)
                base = f"{t.scheme}://{t.host_header}{t.path}"
                return self.parse(urljoin(base, location), redirect=True)
            if status in (404, 410):
                raise self.err(ErrorCode.input_not_found, f"{t.origin} answered HTTP {status}")
            if status >= 500:
                raise _Transient(f"{t.origin} answered HTTP {status}")
            if status != 200:
                raise self.err(ErrorCode.input_fetch_failed, f"{t.origin} answered HTTP {status}",
                               retryable=False)
            declared = [v.strip() for v in resp.headers.get("Content-Length", "").split(",")]
            if any(v.isdigit() and int(v) > self.max_bytes for v in declared):
                raise self.too_large()
            body = bytearray()
            while chunk := resp.read(min(_CHUNK, self.max_bytes + 1 - len(body))):
                body += chunk
                if len(body) > self.max_bytes:
                    raise self.too_large()
        except (OSError, HTTPException, Urllib3Error):
            raise _Transient(f"connection to {t.origin} failed") from None
        finally:
            if resp is not None:
                resp.close()
        if self.deadline.expired:  # the watchdog's shutdown can look like a clean EOF
            raise _Transient("deadline")
        return bytes(body)

    def too_large(self) -> JobError:
        return self.err(ErrorCode.image_too_large, f"download is over {self.max_bytes} bytes")
