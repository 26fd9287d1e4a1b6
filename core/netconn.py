"""Addresses and connections for :mod:`core.net`: which addresses are public
(:func:`is_public_address`), sockets pinned to a checked address, and the watchdog that bounds a
whole fetch (:class:`_Deadline`). Units: seconds."""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import threading
import time

from urllib3.connection import HTTPConnection, HTTPSConnection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges refused on top of ``not ip.is_global``: some are global by Python's table (NAT64, 6to4,
# multicast ff0e::/16 ...) or were not flagged in older Pythons (CGNAT before 3.12.4).
_BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
        "240.0.0.0/4",  # reserved, includes 255.255.255.255
        "::/96",  # unspecified, loopback, deprecated IPv4-compatible
        "::ffff:0:0/96",  # IPv4-mapped
        "64:ff9b::/96", "64:ff9b:1::/48",  # NAT64 (IPv4-embedding)
        "100::/64",  # discard
        "2001::/32",  # Teredo (IPv4-embedding)
        "2002::/16",  # 6to4 (IPv4-embedding)
        "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)

def is_public_address(ip: IPAddress) -> bool:
    """True only for a globally routable unicast address outside every blocked range."""
    if (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    ):
        return False
    return not any(ip.version == net.version and ip in net for net in _BLOCKED_NETWORKS)


_NO_SUCH_HOST = frozenset(
    e for e in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None)) if e
)


def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@functools.lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    """Certificate + hostname verification against certifi's bundle (the system's if absent)."""
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover - certifi ships with requests/botocore
        return ssl.create_default_context()


class _Deadline:
    """The total budget of one fetch, enforced by a watchdog timer.

    Each connection's socket is registered (as a dup of its file descriptor, so the registration
    survives the TLS wrap and never closes the real connection); when the timer fires, they are
    all shut down, which wakes any blocked connect/handshake/read at once.
    """

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        """Seconds left."""
        return self._end - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        dup = sock.dup()
        with self._lock:
            if not self.expired:
                self._socks.append(dup)
                return
        dup.close()
        raise TimeoutError("deadline passed")

    def release(self) -> None:
        """Forget the sockets of finished connections."""
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            s.close()

    def close(self) -> None:
        self._timer.cancel()
        self.release()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for s in self._socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _WatchedMixin:
    """Registers the raw TCP socket with the fetch's :class:`_Deadline` right after connect."""

    def __init__(self, *args: object, deadline: _Deadline, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._deadline = deadline

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        try:
            self._deadline.watch(sock)
        except BaseException:
            sock.close()
            raise
        return sock


class _PinnedHTTP(_WatchedMixin, HTTPConnection):
    """Plain HTTP to a checked IP (``allow_http`` only)."""


class _PinnedHTTPS(_WatchedMixin, HTTPSConnection):
    """TLS to a checked IP; SNI and the certificate check use ``server_hostname``."""
