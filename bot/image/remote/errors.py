"""Registry failures as dockwise errors, translated here and nowhere else.

Three kinds of failure reach this module: library exceptions (aiohttp connection errors,
timeouts), HTTP answers (status + the distribution spec's JSON ``errors`` codes), and
transient failures that survived every retry. Each becomes one ``bot.errors`` exception
whose message is a single line fit for chat: ``Unreachable``, ``Busy``, ``ImageNotFound``,
``Unauthorized``, ``ContentError`` or ``Forbidden``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import aiohttp

from bot.errors import (
    Busy,
    ContentError,
    DockwiseError,
    Forbidden,
    ImageNotFound,
    Unauthorized,
    Unreachable,
)
from bot.image.reference import Reference

# Distribution-spec error codes that mean "no such thing".
NOT_FOUND_CODES = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN", "NOT_FOUND"})


class Transient(Exception):
    """A failure worth another attempt: HTTP 429 / 5xx (``status``) or a connection that
    broke off or timed out (``status`` None)."""

    def __init__(self, host: str, status: int | None, retry_after: float | None = None) -> None:
        super().__init__(f"{host}: {status}")
        self.host = host
        self.status = status
        self.retry_after = retry_after


def why(exc: BaseException) -> str:
    """A few words on a connection failure: "timed out", "connection refused", ..."""
    if isinstance(exc, TimeoutError):  # includes aiohttp's connect timeout
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name not found"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "TLS certificate problem"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return exc.os_error.strerror or type(exc.os_error).__name__
    return type(exc).__name__


def from_library(exc: BaseException, role: str, host: str) -> Exception:
    """An aiohttp exception (or timeout) while talking to ``role`` (``registry``, ``token
    service``) at ``host``: ``Unreachable`` when no connection could be made or the request
    is hopeless, ``Transient`` when an established connection broke off (worth a retry)."""
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return Unreachable(f"cannot reach {role} {host}: {why(exc)}")
    if isinstance(exc, aiohttp.ClientConnectionError | TimeoutError):
        return Transient(host, None)  # reset, disconnect, read timeout
    return Unreachable(f"cannot talk to {role} {host}: {why(exc)}")


@contextlib.contextmanager
def translated(role: str, host: str) -> Iterator[None]:
    """Run a request with library exceptions turned into ``from_library``'s errors."""
    try:
        yield
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise from_library(exc, role, host) from exc


def broke_off(exc: BaseException, what: str, host: str) -> Unreachable:
    """A download that failed midway (no retry: its bytes were already handed on)."""
    return Unreachable(f"download of {what} from {host} broke off ({why(exc)})")


def gave_up(exc: Transient) -> DockwiseError:
    """What a transient failure means once every retry is spent."""
    if exc.status == 429:
        return Busy(f"registry {exc.host} is rate-limiting requests (HTTP 429); try again later")
    if exc.status is None:
        return Unreachable(f"connection to registry {exc.host} keeps breaking off or timing out")
    return Unreachable(f"registry {exc.host} keeps failing (HTTP {exc.status}); try again later")


def asks_to_wait(host: str, status: int, seconds: float) -> Busy:
    return Busy(f"registry {host} asks to wait {seconds:.0f}s (HTTP {status}); try again later")


def error_codes(body: bytes) -> set[str]:
    """The ``errors[].code`` values of a distribution-spec error body (empty if none)."""
    codes: set[str] = set()
    try:
        data = json.loads(body)
        for err in data.get("errors") or []:
            if isinstance(err, dict) and isinstance(err.get("code"), str):
                codes.add(err["code"])
    except (ValueError, AttributeError, TypeError):
        pass
    return codes


def from_status(
    ref: Reference, status: int, body: bytes, what: str, *, had_auth: bool, has_login: bool
) -> DockwiseError:
    """A 4xx answer of the registry for ``what`` (``manifest``, ``blob sha256:…``) of
    ``ref``; ``had_auth``: the request carried credentials or a token, ``has_login``: a
    login for this registry is configured."""
    codes = error_codes(body)
    if status == 404 or codes & NOT_FOUND_CODES:
        if what == "manifest":
            return ImageNotFound(f"image {ref} not found")
        return ImageNotFound(f"{what} of image {ref} not found in {ref.domain}")
    if status == 401:
        if had_auth and has_login:
            return Unauthorized(
                f"{ref.domain} rejected the stored login for {ref.name} "
                "(wrong password, or no access to this repository)"
            )
        return Unauthorized(
            f"not allowed to pull {ref.name}: it is private or does not exist "
            f"(log in with docker login {ref.domain})"
        )
    if status == 403:
        return Unauthorized(f"access to {ref.name} denied by {ref.domain}")
    detail = f" ({', '.join(sorted(codes))})" if codes else ""
    return ContentError(f"registry {ref.domain} answered HTTP {status}{detail} for the {what}")


def how_to_allow(exc: Forbidden, domain: str) -> Forbidden:
    """The guard's refusal of a registry the reference names, with the exact setting that
    allows it (redirect targets and token services get no such hint)."""
    return Forbidden(
        f"{exc.message}; to allow this registry, the bot's operator adds {domain} to "
        f"DOCKWISE_INSECURE_REGISTRIES (e.g. DOCKWISE_INSECURE_REGISTRIES={domain})"
    )
