"""Tests for :mod:`core.net` (SSRF-safe downloads).

Real servers run on 127.0.0.1 only. Public-looking names reach them only through a stub
resolver, and an autouse guard refuses (and fails the test on) any connect or name lookup that
is not loopback, so no traffic can leave the machine even when the code under test is broken.
"""

from __future__ import annotations

import collections
import datetime
import ipaddress
import socket
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from core import net
from core.errors import ErrorCode, JobError
from core.net import fetch_https, is_public_address

PAYLOAD = bytes(range(256)) * 40  # 10240 bytes
LOOPBACK = ("127.0.0.1", "::1")
SECRET = "X-Amz-Signature=SECRET0123&token=TOKEN0456"


# -- guard: nothing but loopback, ever ---------------------------------------------------------


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch):
    violations: list[object] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(address) -> bool:
        ok = isinstance(address, tuple) and address[0] in LOOPBACK
        if not ok:
            violations.append(address)
        return ok

    def connect(self, address):
        if not check(address):
            raise ConnectionRefusedError("test guard: non-loopback connect")
        return real_connect(self, address)

    def connect_ex(self, address):
        if not check(address):
            raise ConnectionRefusedError("test guard: non-loopback connect")
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOOPBACK:
            violations.append(("getaddrinfo", host))
            raise socket.gaierror(socket.EAI_NONAME, "test guard: lookup refused")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    assert not violations, f"non-loopback traffic attempted: {violations}"


class StubResolver:
    """Maps names to fixed answers and records every call."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "no such host")
        return list(self.table[host])


def no_resolver(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolver must not be called (got {host!r})")


@pytest.fixture
def loopback_is_public(monkeypatch):
    """Treat 127.0.0.1 as a public address, so the range check stays on for every other hop."""
    real = net.is_public_address
    monkeypatch.setattr(
        net, "is_public_address", lambda ip: ip == ipaddress.ip_address("127.0.0.1") or real(ip)
    )


# -- loopback servers ----------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        self.server.hits[path] += 1  # type: ignore[attr-defined]
        self.server.hosts.append(self.headers.get("Host"))  # type: ignore[attr-defined]
        try:
            self.route(path, query)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass

    def send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def drip(self, data: bytes, seconds: float = 10.0) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.wfile.write(data)
            self.wfile.flush()
            time.sleep(0.05)

    def route(self, path: str, query: dict[str, list[str]]) -> None:
        seg = path.strip("/").split("/")
        if path == "/ok":
            self.send(200, PAYLOAD, Content_Type="image/png")
        elif path == "/redirect":
            self.send(302, Location=query["to"][0])
        elif seg[0] == "chain":
            n = int(seg[1])
            self.send(302, Location=f"/chain/{n - 1}") if n else self.send(200, PAYLOAD)
        elif path == "/loop":
            self.send(302, Location="/loop")
        elif seg[0] == "status":
            self.send(int(seg[1]), b"nope")
        elif seg[0] == "flaky":  # /flaky/<key>/<failures>
            failures, hits = int(seg[2]), self.server.hits[path]  # type: ignore[attr-defined]
            self.send(503, b"busy") if hits <= failures else self.send(200, PAYLOAD)
        elif path == "/drip-body":  # no Content-Length: a clean EOF would look like success
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.drip(b"x")
        elif path == "/drip-headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self.drip(b"X-Slow: y\r\n")
        elif path == "/big-declared":  # declares 10 MB, then sends nothing for 5 s
            self.send_response(200)
            self.send_header("Content-Length", str(10_000_000))
            self.end_headers()
            self.wfile.flush()
            time.sleep(5)
        elif path == "/no-length":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"z" * 5000)
            self.close_connection = True
        elif path in ("/chunked", "/lying"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            if path == "/lying":
                self.send_header("Content-Length", "10")  # lies: the chunked body is 5000
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(5):
                self.wfile.write(b"3e8\r\n" + b"z" * 1000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True
        else:
            self.send(404)


class Server:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.hits = collections.Counter()  # type: ignore[attr-defined]
        self.httpd.hosts = []  # type: ignore[attr-defined]
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if tls else "http"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def hits(self) -> collections.Counter:
        return self.httpd.hits  # type: ignore[attr-defined]

    @property
    def hosts(self) -> list[str]:
        return self.httpd.hosts  # type: ignore[attr-defined]

    def url(self, path: str, host: str = "photos.example.com") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def http_srv():
    srv = Server()
    yield srv
    srv.close()


def make_ca_and_leaf(hostname: str) -> tuple[bytes, bytes, bytes]:
    """(CA cert PEM, leaf cert PEM, leaf key PEM): a throwaway CA and a leaf for ``hostname``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "maskpaint test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name).public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    return ca.public_bytes(pem), leaf.public_bytes(pem), key_pem


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A TLS server for photos.example.com on 127.0.0.1, the SNI names it saw, a client context."""
    ca_pem, cert_pem, key_pem = make_ca_and_leaf("photos.example.com")
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert_pem)
    (d / "key.pem").write_bytes(key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda sslobj, name, ctx: sni.append(name)
    srv = Server(tls=server_ctx)
    client_ctx = ssl.create_default_context(cadata=ca_pem.decode())
    yield srv, sni, client_ctx
    srv.close()


def local(**kwargs: object) -> dict[str, object]:
    """Keyword arguments for fetching from the loopback HTTP server through a stub name."""
    base: dict[str, object] = dict(
        max_bytes=1_000_000, deadline_s=5.0, allow_private=True, allow_http=True,
        allow_any_port=True, backoff_s=0.01,
        resolver=StubResolver({"photos.example.com": ["127.0.0.1"]}),
    )
    base.update(kwargs)
    return base


def fails(code: ErrorCode, url: str, **kwargs: object) -> JobError:
    with pytest.raises(JobError) as info:
        fetch_https(url, **kwargs)  # type: ignore[arg-type]
    assert info.value.code == code, info.value
    return info.value


# -- address policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "addr, public",
    [
        ("8.8.8.8", True), ("93.184.216.34", True), ("2606:4700::1111", True),
        ("127.0.0.1", False), ("10.0.0.5", False), ("172.16.0.1", False), ("192.168.1.1", False),
        ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False),
        ("255.255.255.255", False), ("224.0.0.1", False), ("240.0.0.1", False),
        ("::1", False), ("::", False), ("fd00::1", False), ("fe80::1", False),
        ("ff0e::1", False), ("::ffff:8.8.8.8", False), ("::ffff:169.254.169.254", False),
        ("64:ff9b::808:808", False), ("2002:808:808::1", False), ("2001::1", False),
    ],
)
def test_is_public_address(addr, public):
    assert is_public_address(ipaddress.ip_address(addr)) is public


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0", "[::1]", "[fd00::1]", "[fe80::1]", "[::ffff:127.0.0.1]",
        "[::ffff:169.254.169.254]", "[64:ff9b::a9fe:a9fe]", "[2002:a9fe:a9fe::1]", "[ff0e::1]",
    ],
)
def test_private_ip_literals_blocked(host):
    fails(ErrorCode.blocked_url, f"https://{host}/latest/meta-data/", max_bytes=100,
          resolver=no_resolver)


@pytest.mark.parametrize(
    "host", ["2130706433", "0177.0.0.1", "0x7f.1", "127.1", "0x7f000001", "017700000001",
             "0x7f.0.0.1", "127.0.0.01", "1.2.3.4.5", "photos.0x10"],
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_numeric_host_spellings_blocked(host, allow_private):
    # Blocked on syntax, before any lookup: allow_private does not admit them either.
    err = fails(ErrorCode.blocked_url, f"https://{host}/x", max_bytes=100,
                allow_private=allow_private, resolver=no_resolver)
    assert "numeric" in err.message


@pytest.mark.parametrize(
    "answer",
    [["10.0.0.5"], ["169.254.169.254"], ["100.64.1.1"], ["127.0.0.1"], ["fd12::1"],
     ["::ffff:10.0.0.5"], ["93.184.216.34", "10.0.0.5"], ["not-an-ip"]],
)
def test_public_name_resolving_to_private_blocked(answer):
    resolver = StubResolver({"photos.example.com": answer})
    err = fails(ErrorCode.blocked_url, "https://photos.example.com/a.jpg", max_bytes=100,
                resolver=resolver)
    assert resolver.calls == [("photos.example.com", 443)]  # blocked after resolution
    assert "photos.example.com" in err.message


def test_unresolvable_host_not_retryable():
    resolver = StubResolver({})
    err = fails(ErrorCode.input_fetch_failed, "https://nowhere.example.com/a.jpg",
                max_bytes=100, resolver=resolver)
    assert err.retryable is False and len(resolver.calls) == 1


def test_slow_resolver_bounded_by_deadline():
    release = threading.Event()

    def slow(host: str, port: int) -> list[str]:
        release.wait(10)
        return ["93.184.216.34"]

    t0 = time.monotonic()
    try:
        err = fails(ErrorCode.input_fetch_failed, "https://photos.example.com/a.jpg",
                    max_bytes=100, deadline_s=0.5, resolver=slow)
    finally:
        release.set()
    assert err.retryable is True
    assert time.monotonic() - t0 < 0.5 + 0.5


# -- URL rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["https://user:pass@photos.example.com/a.jpg", "https://user@photos.example.com/a.jpg",
     "https://:pass@photos.example.com/a.jpg", "https://@photos.example.com/a.jpg"],
)
def test_userinfo_blocked(url):
    err = fails(ErrorCode.blocked_url, url, max_bytes=100, resolver=no_resolver)
    assert "user" not in err.message and "pass" not in err.message


def test_non_default_port_blocked():
    fails(ErrorCode.blocked_url, "https://photos.example.com:8443/a.jpg", max_bytes=100,
          resolver=no_resolver)
    fails(ErrorCode.blocked_url, "http://photos.example.com:8080/a.jpg", max_bytes=100,
          allow_http=True, resolver=no_resolver)
    # An explicit default port is fine: it gets as far as the address check.
    err = fails(ErrorCode.blocked_url, "https://photos.example.com:443/a.jpg", max_bytes=100,
                resolver=StubResolver({"photos.example.com": ["10.0.0.5"]}))
    assert "public" in err.message


@pytest.mark.parametrize(
    "url", ["http://photos.example.com/a.jpg", "ftp://photos.example.com/a.jpg",
            "file:///etc/passwd", "gopher://photos.example.com/", "HTTP://photos.example.com/"],
)
def test_scheme_blocked(url):
    fails(ErrorCode.blocked_url, url, max_bytes=100, resolver=no_resolver)


@pytest.mark.parametrize(
    "url",
    ["", "not a url", "https://", "//photos.example.com/a.jpg", "photos.example.com/a.jpg",
     "https://exa mple.com/", "https://[::1/", "https://photos.example.com:99999/",
     "https://photos.example.com:abc/", "https://photos.example.com:0/", "https://-bad-.com/",
     "https://photos.example.com\\@evil.com/", "https://a..b/", "https://[fe80::1%25eth0]/",
     "https://photos.example.com/\n", None, 42],
)
def test_malformed_url_invalid_input(url):
    fails(ErrorCode.invalid_input, url, max_bytes=100, resolver=no_resolver)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError):
        fetch_https("https://photos.example.com/", max_bytes=100, deadline_s=0)
    lax = ssl.create_default_context()
    lax.check_hostname = False
    lax.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError):
        fetch_https("https://photos.example.com/", max_bytes=100, ssl_context=lax)


# -- fetching from the loopback server ------------------------------------------------------------


def test_allow_private_fetches_exact_bytes_via_checked_address(http_srv):
    kw = local()
    assert fetch_https(http_srv.url("/ok"), **kw) == PAYLOAD
    assert kw["resolver"].calls == [("photos.example.com", http_srv.port)]
    assert http_srv.hosts[-1] == f"photos.example.com:{http_srv.port}"  # original Host kept


def test_loopback_server_blocked_without_allow_private(http_srv):
    before = sum(http_srv.hits.values())
    fails(ErrorCode.blocked_url, http_srv.url("/ok"), **local(allow_private=False))
    fails(ErrorCode.blocked_url, http_srv.url("/ok", host="127.0.0.1"),
          **local(allow_private=False))
    assert sum(http_srv.hits.values()) == before  # never connected


def test_resolved_once_per_hop_no_rebinding(http_srv, loopback_is_public):
    answers = iter([["127.0.0.1"]] + [["10.0.0.5"]] * 5)  # a rebinding DNS server
    calls = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    assert fetch_https(http_srv.url("/ok"), **local(allow_private=False, resolver=rebinding)) \
        == PAYLOAD
    assert calls == ["photos.example.com"]  # the guard fixture fails on any second lookup


def test_redirect_chain_followed_and_rechecked(http_srv, loopback_is_public):
    kw = local(allow_private=False, max_redirects=3)
    assert fetch_https(http_srv.url("/chain/3"), **kw) == PAYLOAD
    assert len(kw["resolver"].calls) == 4  # resolved and checked on every hop


@pytest.mark.parametrize(
    "target",
    ["http://internal.example.com/x", "http://169.254.169.254/latest/meta-data/",
     "http://10.0.0.5/", "http://[::ffff:10.0.0.5]/", "http://2130706433/",
     "http://user:pw@photos.example.com/", "ftp://photos.example.com/"],
)
def test_redirect_to_blocked_place_blocked(http_srv, loopback_is_public, target):
    resolver = StubResolver({"photos.example.com": ["127.0.0.1"],
                             "internal.example.com": ["10.0.0.5"]})
    url = http_srv.url(f"/redirect?to={target}")
    err = fails(ErrorCode.blocked_url, url, **local(allow_private=False, resolver=resolver))
    assert err.retryable is False


def test_too_many_redirects_blocked(http_srv):
    before = http_srv.hits["/loop"]
    fails(ErrorCode.blocked_url, http_srv.url("/loop"), **local(max_redirects=3))
    assert http_srv.hits["/loop"] - before == 4  # the first request + 3 redirects, no retry
    fails(ErrorCode.blocked_url, http_srv.url("/chain/4"), **local(max_redirects=3))
    assert fetch_https(http_srv.url("/chain/0"), **local(max_redirects=0)) == PAYLOAD


@pytest.mark.parametrize("status", [404, 410])
def test_not_found(http_srv, status):
    err = fails(ErrorCode.input_not_found, http_srv.url(f"/status/{status}"), **local())
    assert err.retryable is False
    assert http_srv.hits[f"/status/{status}"] == 1  # not retried


@pytest.mark.parametrize("status", [400, 403, 429])
def test_other_4xx_not_retryable(http_srv, status):
    err = fails(ErrorCode.input_fetch_failed, http_srv.url(f"/status/{status}"), **local())
    assert err.retryable is False and http_srv.hits[f"/status/{status}"] == 1


@pytest.mark.parametrize("failures", [1, 2])
def test_503_then_200_retried(http_srv, failures):
    path = f"/flaky/{uuid.uuid4().hex}/{failures}"
    assert fetch_https(http_srv.url(path), **local(retries=2)) == PAYLOAD
    assert http_srv.hits[path] == failures + 1


def test_permanent_503_fails_retryable(http_srv):
    path = f"/flaky/{uuid.uuid4().hex}/99"
    err = fails(ErrorCode.input_fetch_failed, http_srv.url(path), **local(retries=2))
    assert err.retryable is True and http_srv.hits[path] == 3
    path = f"/flaky/{uuid.uuid4().hex}/99"
    fails(ErrorCode.input_fetch_failed, http_srv.url(path), **local(retries=0))
    assert http_srv.hits[path] == 1


def test_connection_refused_retried_then_retryable():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    attempts = []

    def resolver(host: str, port: int) -> list[str]:
        attempts.append(host)
        return ["127.0.0.1"]

    err = fails(ErrorCode.input_fetch_failed, f"http://photos.example.com:{port}/a",
                **local(retries=2, resolver=resolver))
    assert err.retryable is True and len(attempts) == 3


@pytest.mark.parametrize("path", ["/drip-body", "/drip-headers"])
def test_slow_drip_stops_at_deadline(http_srv, path):
    deadline = 1.0
    t0 = time.monotonic()
    err = fails(ErrorCode.input_fetch_failed, http_srv.url(path),
                **local(deadline_s=deadline, retries=2))
    elapsed = time.monotonic() - t0
    assert err.retryable is True
    assert deadline - 0.05 < elapsed < deadline + 0.5, elapsed


def test_silent_tls_peer_stops_at_deadline():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts TCP (kernel backlog) but never speaks TLS
    try:
        t0 = time.monotonic()
        err = fails(ErrorCode.input_fetch_failed,
                    f"https://photos.example.com:{listener.getsockname()[1]}/a",
                    **local(deadline_s=0.8, allow_http=False))
        assert err.retryable is True and time.monotonic() - t0 < 0.8 + 0.5
    finally:
        listener.close()


def test_declared_content_length_over_cap_rejected_before_body(http_srv):
    t0 = time.monotonic()
    fails(ErrorCode.image_too_large, http_srv.url("/big-declared"),
          **local(max_bytes=1_000_000, deadline_s=4.0))
    assert time.monotonic() - t0 < 1.0  # reading the (never sent) body would run to 4 s


@pytest.mark.parametrize("path", ["/no-length", "/chunked", "/lying"])
def test_streamed_body_over_cap_rejected(http_srv, path, monkeypatch):
    import urllib3.response

    received = []
    real_read = urllib3.response.HTTPResponse.read

    def spy(self, *args, **kwargs):
        data = real_read(self, *args, **kwargs)
        received.append(len(data))
        return data

    monkeypatch.setattr(urllib3.response.HTTPResponse, "read", spy)
    fails(ErrorCode.image_too_large, http_srv.url(path), **local(max_bytes=4000))
    assert sum(received) == 4001  # stops at max_bytes + 1, not at the end of the body
    monkeypatch.setattr(urllib3.response.HTTPResponse, "read", real_read)
    fails(ErrorCode.image_too_large, http_srv.url(path), **local(max_bytes=4999))
    assert fetch_https(http_srv.url(path), **local(max_bytes=5000)) == b"z" * 5000


def test_exact_cap_accepted_and_one_over_rejected(http_srv):
    assert fetch_https(http_srv.url("/ok"), **local(max_bytes=len(PAYLOAD))) == PAYLOAD
    fails(ErrorCode.image_too_large, http_srv.url("/ok"), **local(max_bytes=len(PAYLOAD) - 1))


def test_messages_name_field_never_echo_query_or_path(http_srv, loopback_is_public):
    cases = [
        (f"https://u:p@photos.example.com/secretpath?{SECRET}", {}),
        (f"https://photos.example.com:8443/secretpath?{SECRET}", {}),
        (f"https://0x7f.1/secretpath?{SECRET}", {}),
        (f"https://photos.example.com/secretpath?{SECRET}",
         {"resolver": StubResolver({"photos.example.com": ["10.0.0.5"]})}),
        (http_srv.url(f"/status/404?{SECRET}"), local()),
        (http_srv.url(f"/status/403?{SECRET}"), local()),
        (http_srv.url(f"/flaky/{uuid.uuid4().hex}/9?{SECRET}"), local()),
        (http_srv.url(f"/ok?{SECRET}"), local(max_bytes=10)),
        (http_srv.url(f"/loop?{SECRET}"), local()),
        (http_srv.url(f"/redirect?to=http://169.254.169.254/secretpath%3F{SECRET}"),
         local(allow_private=False)),
    ]
    for url, kw in cases:
        kw = {"max_bytes": 100, "resolver": no_resolver, **kw, "field": "mask"}
        with pytest.raises(JobError) as info:
            fetch_https(url, **kw)
        text = f"{info.value} {info.value.message}"
        assert info.value.field == "mask" and info.value.message.startswith("mask: "), text
        for secret in ("SECRET0123", "TOKEN0456", "secretpath", "u:p"):
            assert secret not in text, text


# -- TLS: connect to the checked IP, verify the certificate against the URL's name ---------------


def test_tls_fetch_pins_ip_and_keeps_sni_and_hostname_check(tls):
    srv, sni, ctx = tls
    kw = local(allow_http=False, ssl_context=ctx)
    assert fetch_https(srv.url("/ok"), **kw) == PAYLOAD
    assert sni[-1] == "photos.example.com"
    assert srv.hosts[-1] == f"photos.example.com:{srv.port}"


def test_tls_certificate_for_other_name_rejected(tls):
    srv, _, ctx = tls
    resolver = StubResolver({"other.example.com": ["127.0.0.1"]})
    err = fails(ErrorCode.input_fetch_failed, srv.url("/ok", host="other.example.com"),
                **local(allow_http=False, ssl_context=ctx, resolver=resolver))
    assert err.retryable is False and len(resolver.calls) == 1  # not retried


def test_tls_untrusted_certificate_rejected_by_default(tls):
    srv, _, _ = tls
    err = fails(ErrorCode.input_fetch_failed, srv.url("/ok"), **local(allow_http=False))
    assert err.retryable is False


def test_tls_redirect_to_http_blocked(tls):
    srv, _, ctx = tls
    target = f"http://photos.example.com:{srv.port}/ok"
    fails(ErrorCode.blocked_url, srv.url(f"/redirect?to={target}"),
          **local(allow_http=False, ssl_context=ctx))
