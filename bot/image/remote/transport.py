"""HTTP to registries: one aiohttp session, scheme choice, the SSRF guard on every hop,
redirects followed by hand (credentials never follow them), retries with backoff.

Plays the part of go-containerregistry's ``remote/transport`` round-trippers (schemer,
retry, redirect handling); the auth handshake lives in ``authn`` and the translation of
failures in ``errors``.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential, wait_random

from bot.errors import ContentError, Forbidden
from bot.image.reference import Reference
from bot.image.remote import errors
from bot.image.remote.errors import Transient
from bot.netguard import IPAddress, Trust, parse_ip

if TYPE_CHECKING:
    from bot.image.remote.authn import Authenticator

T = TypeVar("T")

DOCKER_HUB_API = "registry-1.docker.io"
MAX_REDIRECTS = 5
CHUNK = 256 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: After a mirror fails, requests skip it (and go to the registry) for this many seconds.
MIRROR_REST = 30.0


def parse_mirrors(entries: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``DOCKWISE_REGISTRY_MIRRORS`` entries (``docker.io=https://mirror.internal``; several
    for one registry are tried in order) as registry domain -> mirror base URLs.

    A mirror is ``http(s)://host[:port]`` serving the registry API at ``/v2/`` (dockerd's
    ``registry-mirrors``). Raises ``InvalidInput`` with one line naming a malformed entry.
    """
    from bot.errors import InvalidInput

    out: dict[str, list[str]] = {}
    for entry in entries:
        registry, sep, url = (part.strip() for part in entry.partition("="))
        parts = urllib.parse.urlsplit(url)
        if (
            not sep
            or not registry
            or "/" in registry
            or parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.path not in ("", "/")
            or parts.query
            or parts.username
        ):
            raise InvalidInput(
                f"DOCKWISE_REGISTRY_MIRRORS entry {entry!r} is not REGISTRY=URL "
                "(e.g. docker.io=https://mirror.internal)"
            )
        domain = registry.lower()
        domain = "docker.io" if domain in ("index.docker.io", DOCKER_HUB_API) else domain
        out.setdefault(domain, []).append(f"{parts.scheme}://{parts.netloc.lower()}")
    return {registry: tuple(urls) for registry, urls in out.items()}


@dataclass(frozen=True, slots=True)
class Target:
    """Where one repository of a registry is reached."""

    ref: Reference
    scheme: str  # "https", or "http" for registries the insecure-registries policy names
    api_host: str  # host[:port] in URLs, lower case
    mirror: bool = False  # a pull-through mirror of ref's registry (DOCKWISE_REGISTRY_MIRRORS)

    @property
    def login_domain(self) -> str:
        """Whose credentials answer this target's challenges: the registry's, or for a
        mirror the mirror host's own (the registry's login never goes to a mirror)."""
        return self.api_host if self.mirror else self.ref.domain

    @property
    def scope(self) -> str:
        return f"repository:{self.ref.path}:pull"

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.api_host}/v2/{self.ref.path}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (``"7"`` or an HTTP date); None when absent/unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def human(size: int) -> str:
    """Binary units for limits in messages: 4 MiB, 2 GiB, 1536 bytes."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"


async def read_limited(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """Read a small body whole, refusing more than ``limit`` bytes (ContentError); a
    broken-off transfer is ``Transient``."""
    if resp.content_length is not None and resp.content_length > limit:
        raise ContentError(
            f"{what} is too large ({resp.content_length} bytes, the limit is {human(limit)})"
        )
    data = bytearray()
    try:
        async for chunk in resp.content.iter_chunked(CHUNK):
            data += chunk
            if len(data) > limit:
                raise ContentError(f"{what} is too large (over the {human(limit)} limit)")
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        raise Transient(resp.url.host or "registry", None) from exc
    return bytes(data)


class Transport:
    """The session and the request loop shared by ``authn`` and ``client``."""

    def __init__(
        self,
        *,
        trust: Trust,
        url_guard: Callable[[str], None] | None = None,
        connector_factory: Callable[[], aiohttp.BaseConnector] | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_attempts: int = 4,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        max_retry_after: float = 30.0,
        user_agent: str = "dockwise/0.1",
        mirrors: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``mirrors``: registry domain -> pull-through mirror URLs, tried in order before
        the registry (``parse_mirrors``).

        ``url_guard`` is called with every URL before it is requested (registry, token
        realm, redirect targets) and may raise ``bot.errors.Forbidden`` (SSRF policy);
        ``connector_factory`` makes the session's connector (e.g. an address-checking one)."""
        self.trust = trust
        self.url_guard = url_guard
        self._connector_factory = connector_factory
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self.max_attempts = max_attempts
        self._backoff: wait_base = wait_exponential(
            multiplier=backoff_initial, max=backoff_max
        ) + wait_random(0, backoff_initial)
        self.max_retry_after = max_retry_after
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._addresses: dict[str, list[IPAddress]] = {}  # registry host -> DNS answers
        self.mirrors = {k: tuple(v) for k, v in (mirrors or {}).items()}
        self._mirror_down: dict[str, float] = {}  # mirror host -> skipped until (monotonic)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = self._connector_factory() if self._connector_factory else None
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                headers={"User-Agent": self._user_agent, "Accept-Encoding": "identity"},
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ----------------------------------------------------------------- where

    def target(self, ref: Reference, addresses: Iterable[IPAddress] = ()) -> Target:
        """Where ``ref``'s registry is reached: plain HTTP when the insecure-registries
        policy says so for its ``host[:port]`` (or, for address ranges, for ``addresses``,
        what its name resolves to), else HTTPS."""
        domain = ref.domain.lower()
        api_host = DOCKER_HUB_API if domain == "docker.io" else domain
        plain = self.trust.registry_plain_http(domain, addresses)
        return Target(ref, "http" if plain else "https", api_host)

    def mirror_targets(self, ref: Reference) -> list[Target]:
        """The mirrors configured for ``ref``'s registry that are not resting after a
        failure, in order."""
        now = time.monotonic()
        targets = []
        for url in self.mirrors.get(ref.domain.lower(), ()):
            parts = urllib.parse.urlsplit(url)
            host = parts.netloc.lower()
            if self._mirror_down.get(host, 0.0) > now:
                continue
            targets.append(Target(ref, parts.scheme, host, mirror=True))
        return targets

    def mirror_failed(self, target: Target) -> None:
        """Skip ``target``'s mirror for ``MIRROR_REST`` seconds (the registry serves)."""
        self._mirror_down[target.api_host] = time.monotonic() + MIRROR_REST

    async def resolve_target(self, ref: Reference) -> Target:
        """``target`` that also resolves a registry name when listed address ranges may
        cover it (as dockerd does for its insecure-registries CIDRs); a name that does not
        resolve is left to the connection attempt to report."""
        target = self.target(ref)
        host = urllib.parse.urlsplit(f"//{ref.domain}").hostname or ""
        if target.scheme == "http" or not self.trust.needs_addresses(host):
            return target
        if host not in self._addresses:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, None, type=socket.SOCK_STREAM
                )
            except OSError:
                infos = []
            found = (parse_ip(str(info[4][0]).split("%", 1)[0]) for info in infos)
            self._addresses[host] = [ip for ip in found if ip is not None]
        return self.target(ref, self._addresses[host])

    # ----------------------------------------------------------------- retries

    async def with_retries(
        self, host: str, call: Callable[[], Awaitable[T]], attempts: int | None = None
    ) -> T:
        """Run ``call`` again after ``Transient`` failures (backoff, or the server's
        ``Retry-After``), at most ``attempts`` (default ``max_attempts``) times; then
        ``errors.gave_up``."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts or self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(Transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await call()
        except Transient as exc:
            raise errors.gave_up(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Transient) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))

    def transient_status(self, resp: aiohttp.ClientResponse, host: str) -> Transient:
        """A 429 / 5xx answer as ``Transient`` (released); ``Busy`` when it asks to wait
        longer than ``max_retry_after``."""
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        resp.release()
        if retry_after is not None and retry_after > self.max_retry_after:
            raise errors.asks_to_wait(host, resp.status, retry_after)
        return Transient(host, resp.status, retry_after)

    # ----------------------------------------------------------------- requests

    async def open(
        self,
        target: Target,
        url: str,
        *,
        what: str,
        auth: Authenticator,
        accept: str | None = None,
        method: str = "GET",
    ) -> aiohttp.ClientResponse:
        """GET (or ``method``, e.g. HEAD) ``url`` answering auth challenges (through
        ``auth``) and following redirects by hand. Returns a 2xx response (caller
        releases it); raises ``Transient`` for failures worth a retry and ``bot.errors``
        exceptions for the rest."""
        session = self.session()
        authenticated = False
        redirects = 0
        current = url
        while True:
            parts = urllib.parse.urlsplit(current)
            host = parts.netloc.lower()
            if parts.scheme not in ("http", "https") or not host:
                raise ContentError(f"registry {target.api_host} redirected to an unusable URL")
            on_registry = host == target.api_host and parts.scheme == target.scheme
            headers: dict[str, str] = {}
            if accept:
                headers["Accept"] = accept
            sent_auth = auth.header(target) if on_registry else None
            if sent_auth:
                headers["Authorization"] = sent_auth
            try:
                if self.url_guard is not None:
                    self.url_guard(current)
                with errors.translated("registry", host):
                    resp = await session.request(
                        method, current, headers=headers, allow_redirects=False
                    )
            except Forbidden as exc:
                if on_registry and redirects == 0:  # the registry itself, not a redirect
                    raise errors.how_to_allow(exc, target.ref.domain) from None
                raise
            status = resp.status
            if status in _REDIRECTS:
                location = resp.headers.get("Location")
                resp.release()
                redirects += 1
                if not location or redirects > MAX_REDIRECTS:
                    raise ContentError(f"registry {target.api_host} sent a broken redirect")
                current = urllib.parse.urljoin(current, location)
                continue
            if status == 401 and on_registry and not authenticated:
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.release()
                await auth.login(target, challenge)
                authenticated = True
                continue
            if status == 429 or status >= 500:
                raise self.transient_status(resp, host)
            if status >= 400:
                try:
                    body = await resp.content.read(64 * 1024)
                except (aiohttp.ClientError, TimeoutError):
                    body = b""
                finally:
                    resp.release()
                raise errors.from_status(
                    target.ref,
                    status,
                    body,
                    what,
                    had_auth=authenticated or bool(sent_auth),
                    has_login=auth.has_login(target.login_domain),
                )
            if status != 200 and status != 206:
                resp.release()
                raise ContentError(f"registry {host} answered HTTP {status} for the {what}")
            return resp
