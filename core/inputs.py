"""Turn an input reference (data URL, bare base64, ``s3://``, ``https://``) into bytes.

Sizes are checked before decoding or downloading: the base64 text length against the byte cap,
the S3 object's ``ContentLength`` by HEAD before GET, and HTTP bodies by :mod:`core.net`.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable

from core.errors import ErrorCode, JobError
from core.settings import Settings

#: ``data:[<media type>][;param]*;base64,`` (RFC 2397), any case; the media type is not trusted
#: (``application/octet-stream`` is common): the decoder sniffs the content.
_DATA_URL = re.compile(r"^data:([a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+)?(;[a-z0-9=._+-]+)*;base64,",
                       re.I)
_WHITESPACE = b" \t\r\n\v\f"
_URLSAFE_TO_STD = bytes.maketrans(b"-_", b"+/")


def _b64(text: str, field: str, max_bytes: int) -> bytes:
    """Base64 as tools write it: line-wrapped (the ``base64`` CLI's 76 columns, CRLF or LF),
    surrounding whitespace, the URL-safe alphabet (``-_``, RFC 4648 section 5) and missing
    ``=`` padding are accepted; any other character is rejected.

    Length is checked before decoding (allowing for line breaks, then exactly). Decoding is
    ``binascii.a2b_base64(strict_mode=True)`` in C: first on the text as sent (the common case,
    no copy), else after ``bytes.translate`` strips whitespace and maps the URL-safe alphabet.
    No regex runs over the payload (a character-class regex cost 39 % of decode time on a
    15 MB payload).
    """
    limit = 4 * (max_bytes // 3 + 1)
    if len(text) > limit + limit // 38 + 16:  # a CRLF every 76 chars adds 1/38
        raise JobError(ErrorCode.image_too_large,
                       f"{field}: encoded input exceeds {max_bytes} bytes", field=field)
    if len(text) <= limit and len(text) % 4 == 0:
        try:
            return binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError):
            pass  # whitespace, URL-safe alphabet, or not base64 at all: the lenient path decides
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise JobError(ErrorCode.invalid_image, f"{field}: invalid base64", field=field) from None
    raw = raw.translate(_URLSAFE_TO_STD, _WHITESPACE)
    if len(raw) > limit:
        raise JobError(ErrorCode.image_too_large,
                       f"{field}: encoded input exceeds {max_bytes} bytes", field=field)
    raw += b"=" * (-len(raw) % 4)  # missing padding; a remainder of 1 stays invalid below
    try:
        return binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, ValueError):
        raise JobError(ErrorCode.invalid_image, f"{field}: invalid base64", field=field) from None


def parse_s3_url(url: str, field: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key).

    Raises:
        JobError(invalid_input): malformed.
        JobError(blocked_url): a ``..`` path segment.
    """
    rest = url[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise JobError(ErrorCode.invalid_input, f"{field}: expected s3://bucket/key", field=field)
    if ".." in key.split("/") or key.startswith("/"):
        raise JobError(ErrorCode.blocked_url, f"{field}: path traversal in s3 key", field=field)
    return bucket, key


def s3_allowed(bucket: str, key: str, allowed: list[str]) -> bool:
    """True when ``bucket/key`` falls under one of ``allowed`` (``bucket`` or ``bucket/prefix``)."""
    for entry in allowed:
        b, _, prefix = entry.partition("/")
        if b == bucket and key.startswith(prefix):
            return True
    return False


def _is_output(bucket: str, key: str, settings: Settings) -> bool:
    """True when ``bucket/key`` lies where this deployment writes job outputs."""
    if bucket != settings.s3_bucket:
        return False
    prefix = settings.s3_prefix.strip("/")
    return not prefix or key.startswith(prefix + "/")


def read_s3(client, bucket: str, key: str, *, max_bytes: int, field: str) -> bytes:
    """HEAD (size check), then GET. Raises JobError input_not_found / image_too_large /
    input_fetch_failed."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        head = client.head_object(Bucket=bucket, Key=key)
        if head.get("ContentLength", 0) > max_bytes:
            raise JobError(ErrorCode.image_too_large,
                           f"{field}: object exceeds {max_bytes} bytes", field=field)
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        data = body.read(max_bytes + 1)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if err.get("Code") in ("404", "NoSuchKey", "NotFound", "NoSuchBucket") or status == 404:
            raise JobError(ErrorCode.input_not_found, f"{field}: s3 object not found",
                           field=field) from None
        if status == 403:
            raise JobError(ErrorCode.input_fetch_failed, f"{field}: access denied to s3 object",
                           field=field, retryable=False) from None
        raise JobError(ErrorCode.input_fetch_failed,
                       f"{field}: reading s3 object failed ({err.get('Code') or status})",
                       field=field) from None
    except BotoCoreError as exc:
        raise JobError(ErrorCode.input_fetch_failed,
                       f"{field}: reading s3 object failed ({type(exc).__name__})",
                       field=field) from None
    if len(data) > max_bytes:
        raise JobError(ErrorCode.image_too_large, f"{field}: object exceeds {max_bytes} bytes",
                       field=field)
    return data


def load_bytes(
    ref: str,
    field: str,
    settings: Settings,
    s3_client: Callable[[], object] | None = None,
) -> bytes:
    """Fetch the bytes an input reference points at.

    Args:
        ref: ``data:image/...;base64,...``, bare base64, ``s3://bucket/key`` or ``https://...``.
        field: the request field name, for error messages.
        settings: limits, input buckets (``s3://`` inputs are read only under
            ``settings.input_buckets``, never under the output prefix), private-URL switch.
        s3_client: returns a boto3 S3 client (only called for ``s3://`` inputs).

    Raises:
        JobError: invalid_input, invalid_image, image_too_large, blocked_url, input_not_found,
            input_fetch_failed.
    """
    max_bytes = settings.max_input_bytes
    if ref[:5].lower() == "data:":
        m = _DATA_URL.match(ref[:256])
        if not m:
            raise JobError(ErrorCode.invalid_image,
                           f"{field}: expected data:<type>;base64,...", field=field)
        return _b64(ref[m.end():], field, max_bytes)
    if ref.startswith("s3://"):
        bucket, key = parse_s3_url(ref, field)
        # only the configured input buckets/prefixes: the output bucket is never implicitly
        # readable (one caller must not read another job's outputs by naming their key), and its
        # output prefix stays closed even when an operator lists that bucket as an input
        if (not s3_allowed(bucket, key, settings.input_buckets)
                or _is_output(bucket, key, settings) or s3_client is None):
            raise JobError(ErrorCode.blocked_url, f"{field}: bucket not allowed for inputs",
                           field=field)
        return read_s3(s3_client(), bucket, key, max_bytes=max_bytes, field=field)
    scheme = ref.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", ref) else ""
    if scheme in ("https", "http"):
        from core.net import fetch_https

        return fetch_https(ref, max_bytes=max_bytes, deadline_s=settings.fetch_deadline_s,
                           allow_private=settings.allow_private_urls, field=field)
    if scheme:
        raise JobError(ErrorCode.blocked_url, f"{field}: URL scheme not allowed", field=field)
    return _b64(ref, field, max_bytes)
