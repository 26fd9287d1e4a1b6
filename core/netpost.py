"""One SSRF-checked ``POST`` (webhook deliveries): :func:`check_post_url`, :func:`post_once`.

Why this exists: a webhook URL is caller-supplied exactly like an input URL, so it must pass the
same destination rules. Rather than a second copy of those rules, this module drives
:mod:`core.net`'s own URL parser (scheme, userinfo, port, numeric-host spelling), resolver and
address check, and its pinned connections (the socket goes to the checked address; TLS verifies
the URL's hostname) with the same total-deadline watchdog. Only the request differs: a POST whose
reply body is ignored, and redirects are not followed (a redirect is a failed delivery: a body
signed for one receiver is not re-sent elsewhere).

Units: seconds, bytes.
"""

from __future__ import annotations

import ssl
from http.client import HTTPException

from urllib3.exceptions import HTTPError as Urllib3Error

from core.errors import ErrorCode, JobError
from core.net import Resolver, _Fetch, _Transient
from core.netconn import _Deadline, _default_ssl_context, _getaddrinfo

_USER_AGENT = "maskpaint-webhook/1"


def _fetcher(*, field: str, deadline_s: float, allow_private: bool, allow_http: bool,
             allow_any_port: bool, resolver: Resolver | None,
             ssl_context: ssl.SSLContext | None) -> _Fetch:
    return _Fetch(field=field, max_bytes=0, deadline_s=deadline_s, allow_private=allow_private,
                  max_redirects=0, allow_http=allow_http, allow_any_port=allow_any_port,
                  resolver=resolver or _getaddrinfo,
                  ssl_context=ssl_context or _default_ssl_context())


def check_post_url(url: object, *, field: str = "webhook", allow_http: bool = False,
                   allow_any_port: bool = False) -> None:
    """Check a POST target's URL without any network use (scheme, userinfo, host, port).

    Raises:
        JobError: ``invalid_input`` (malformed) or ``blocked_url`` (a rule of
            :func:`core.net.fetch_https`), naming ``field``, echoing no more than scheme + host.
    """
    _fetcher(field=field, deadline_s=1.0, allow_private=False, allow_http=allow_http,
             allow_any_port=allow_any_port, resolver=None, ssl_context=None
             ).parse(url, redirect=False)


def check_post_destination(url: object, *, field: str = "webhook", allow_private: bool = False,
                           allow_http: bool = False, allow_any_port: bool = False,
                           deadline_s: float = 2.0, resolver: Resolver | None = None) -> None:
    """:func:`check_post_url` plus the address rule, before anything is queued: an IP literal,
    or a name that resolves (within ``deadline_s``, s) only or partly to a private, loopback,
    link-local, reserved or otherwise non-public address, is refused unless ``allow_private``.
    A name that does not resolve now (or in time) passes: the POST itself checks again and
    connects only to the address it checked.

    Raises:
        JobError: ``invalid_input`` (malformed) or ``blocked_url``, naming ``field``.
    """
    f = _fetcher(field=field, deadline_s=deadline_s, allow_private=allow_private,
                 allow_http=allow_http, allow_any_port=allow_any_port, resolver=resolver,
                 ssl_context=None)
    target = f.parse(url, redirect=False)
    if allow_private:
        return
    f.deadline = _Deadline(deadline_s)
    try:
        f.addresses(target)
    except _Transient:
        return
    except JobError as err:
        if err.code == ErrorCode.blocked_url:
            raise
    finally:
        f.deadline.close()


def post_once(url: str, body: bytes, headers: dict[str, str], *, deadline_s: float = 10.0,
              allow_private: bool = False, allow_http: bool = False,
              allow_any_port: bool = False, resolver: Resolver | None = None,
              ssl_context: ssl.SSLContext | None = None, field: str = "webhook") -> int:
    """POST ``body`` to ``url`` once, under :func:`core.net.fetch_https`'s destination rules.

    Args:
        url: ``https://host/path`` (``http`` / other ports only with the allowances, which are
            for tests and self-hosted use, like ``allow_private``).
        body: the request body, bytes; ``headers``: extra request headers.
        deadline_s: the whole attempt (resolve, connect, TLS, send, status line), seconds.

    Returns:
        The HTTP status code of the reply (redirects are not followed).

    Raises:
        JobError: the URL breaks a rule (``invalid_input`` / ``blocked_url``), or the host does
            not resolve or fails TLS verification (``input_fetch_failed``, not retryable).
        ConnectionError: a network failure or the deadline (worth retrying).
    """
    f = _fetcher(field=field, deadline_s=deadline_s, allow_private=allow_private,
                 allow_http=allow_http, allow_any_port=allow_any_port, resolver=resolver,
                 ssl_context=ssl_context)
    target = f.parse(url, redirect=False)
    f.deadline = _Deadline(deadline_s)
    try:
        try:
            conn = f.connect(target)
        except _Transient as e:
            raise ConnectionError(e.reason) from None
        resp = None
        try:
            conn.request("POST", target.path, body=body, headers={
                "Host": target.host_header, "User-Agent": _USER_AGENT,
                "Content-Length": str(len(body)), "Connection": "close", **headers},
                preload_content=False, decode_content=False)
            resp = conn.getresponse()
            return resp.status
        except (OSError, HTTPException, Urllib3Error):
            raise ConnectionError(f"connection to {target.origin} failed") from None
        finally:
            if resp is not None:
                resp.close()
            conn.close()
    except JobError:
        raise
    finally:
        f.deadline.close()
