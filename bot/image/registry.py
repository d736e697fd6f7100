"""Pull image metadata and layers from OCI / Docker registries (distribution API v2).

``RegistryClient`` does the HTTP: one aiohttp session, Basic and Bearer-token auth from
Docker's ``config.json``, manual redirects (Authorization only ever goes to the registry
host), retries of 429/5xx/connection resets honouring ``Retry-After``, and digest checks
of everything it downloads. ``RegistrySource`` is the ``ImageSource`` built on it:
reference + platform -> ``ResolvedImage`` whose layers stream lazily.

Registries that ``DOCKWISE_INSECURE_REGISTRIES`` marks plain-HTTP (``bot.netguard.Trust``,
the policy the address guard uses too) are reached over http, every other registry over
https; ``docker.io`` is served by ``registry-1.docker.io``.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential, wait_random

from bot.errors import (
    Busy,
    ContentError,
    Forbidden,
    ImageNotFound,
    InvalidReference,
    Unauthorized,
    Unreachable,
)
from bot.image.auth import Challenge, CredentialStore, TokenCache, load_credentials, parse_challenge
from bot.image.reference import Reference, parse_reference, validate_digest
from bot.image.source import Compression, LayerBlob, Platform, ResolvedImage
from bot.netguard import IPAddress, Trust, parse_ip
from bot.observability import BYTES_FETCHED, count_cache

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
IMAGE_CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)

DOCKER_HUB_API = "registry-1.docker.io"
MANIFEST_MAX = 4 * 1024 * 1024  # a manifest or index
CONFIG_MAX = 8 * 1024 * 1024  # an image config
IMAGE_COMPRESSED_MAX = 2 * 1024 * 1024 * 1024  # all layers of one image, as downloaded
MAX_LAYERS = 1000  # filesystem layers per image (Docker itself stops at 127)
CHUNK = 256 * 1024
MAX_REDIRECTS = 5
MAX_UNLABELLED_ENTRIES = 16  # index entries without "platform" whose config is read
_HASHES = {"sha256", "sha384", "sha512"}
_NOT_FOUND_CODES = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN", "NOT_FOUND"})


# --------------------------------------------------------------------------- cache seam


class ManifestCache(Protocol):
    """Where fetched manifests and configs may be kept. Keys are ``manifest:NAME@DIGEST``
    and ``blob:NAME@DIGEST`` (``ttl`` None: content-addressed, keep forever) or
    ``manifest:NAME:TAG`` (``ttl`` seconds: tags move). NAME is e.g. docker.io/library/x."""

    async def get(self, key: str) -> tuple[str, bytes] | None: ...

    async def set(self, key: str, media_type: str, body: bytes, ttl: float | None) -> None: ...


class MemoryManifestCache:
    """A process-local ``ManifestCache`` (no size bound; for tests and the CLI)."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[str, bytes, float | None]] = {}

    async def get(self, key: str) -> tuple[str, bytes] | None:
        item = self._items.get(key)
        if item is None:
            return None
        media_type, body, expires = item
        if expires is not None and time.monotonic() >= expires:
            del self._items[key]
            return None
        return media_type, body

    async def set(self, key: str, media_type: str, body: bytes, ttl: float | None) -> None:
        expires = None if ttl is None else time.monotonic() + ttl
        self._items[key] = (media_type, body, expires)


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True, slots=True)
class Manifest:
    media_type: str
    digest: str
    body: bytes = field(repr=False)
    data: dict[str, Any] = field(repr=False)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


class _Retry(Exception):
    """A transient failure worth another attempt."""

    def __init__(self, host: str, status: int | None, retry_after: float | None = None) -> None:
        super().__init__(f"{host}: {status}")
        self.host = host
        self.status = status
        self.retry_after = retry_after


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


def compression_for(media_type: str) -> Compression:
    """Layer compression from its media type (OCI and Docker spellings)."""
    mt = media_type.lower()
    if mt.endswith(("+gzip", ".gzip", "tar.gz")):
        return "gzip"
    if mt.endswith(("+zstd", ".zstd")):
        return "zstd"
    if mt.endswith((".tar", "layer.v1.tar")):
        return "none"
    raise ContentError(f"unsupported layer type {media_type!r}")


def _hasher(digest: str) -> Any:
    algorithm = digest.partition(":")[0]
    if algorithm not in _HASHES:
        raise ContentError(f"unsupported digest algorithm in {digest!r}")
    return hashlib.new(algorithm)


def _verify(data: bytes, digest: str, what: str) -> None:
    hasher = _hasher(digest)
    hasher.update(data)
    if f"{digest.partition(':')[0]}:{hasher.hexdigest()}" != digest:
        raise ContentError(f"{what} does not match its digest {digest}")


def _content_digest(value: object, where: str) -> str:
    """A digest found inside registry content; malformed ones are a ContentError."""
    try:
        return validate_digest(value if isinstance(value, str) else "")
    except InvalidReference:
        raise ContentError(f"{where} holds a malformed digest {str(value)[:80]!r}") from None


def _platform_of(entry: dict[str, Any]) -> Platform | None:
    plat = entry.get("platform")
    if not isinstance(plat, dict):
        return None
    os_name, arch = plat.get("os"), plat.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        return None
    if os_name == "unknown" or arch == "unknown":  # attestations, signatures
        return None
    variant = plat.get("variant")
    return Platform(os_name, arch, variant if isinstance(variant, str) and variant else None)


_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


def _normal(p: Platform) -> tuple[str, str, str | None]:
    arch = p.architecture.lower()
    variant = (p.variant or _DEFAULT_VARIANT.get(arch) or "").lower() or None
    return p.os.lower(), arch, variant


def pick_platform(
    entries: list[tuple[Platform, dict[str, Any]]], wanted: Platform
) -> dict[str, Any] | None:
    """The index entry for ``wanted``: exact os/arch/variant (``arm64`` = ``arm64/v8``),
    else, when no variant was asked for, the first entry with the same os/arch."""
    for plat, entry in entries:
        if _normal(plat) == _normal(wanted):
            return entry
    if wanted.variant is None:
        for plat, entry in entries:
            if (plat.os, plat.architecture) == (wanted.os, wanted.architecture):
                return entry
    return None


# --------------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class _Target:
    ref: Reference
    scheme: str
    api_host: str  # host[:port] in URLs, lower case

    @property
    def scope(self) -> str:
        return f"repository:{self.ref.path}:pull"

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.api_host}/v2/{self.ref.path}"


class RegistryClient:
    """Registry HTTP client. Use one per process; ``await aclose()`` at the end."""

    def __init__(
        self,
        *,
        credentials: CredentialStore | None = None,
        insecure_registries: Iterable[str] | Trust = (),
        cache: ManifestCache | None = None,
        tag_ttl: float = 300.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_attempts: int = 4,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        max_retry_after: float = 30.0,
        user_agent: str = "dockwise/0.1",
        url_guard: Callable[[str], None] | None = None,
        connector_factory: Callable[[], aiohttp.BaseConnector] | None = None,
        max_manifest_bytes: int = MANIFEST_MAX,
        max_config_bytes: int = CONFIG_MAX,
        max_image_compressed_bytes: int = IMAGE_COMPRESSED_MAX,
        max_layers: int = MAX_LAYERS,
    ) -> None:
        """``url_guard`` is called with every URL before it is requested (registry, token
        realm, redirect targets) and may raise ``bot.errors.Forbidden`` (SSRF policy);
        ``connector_factory`` makes the session's connector (e.g. an address-checking one)."""
        self.credentials = credentials if credentials is not None else CredentialStore()
        # The same policy object the address guard uses (DOCKWISE_INSECURE_REGISTRIES).
        self.trust = (
            insecure_registries
            if isinstance(insecure_registries, Trust)
            else Trust.parse(insecure_registries)
        )
        self._addresses: dict[str, list[IPAddress]] = {}  # registry host -> DNS answers
        self.cache = cache
        self.tag_ttl = tag_ttl
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
        self.url_guard = url_guard
        self._connector_factory = connector_factory
        self._session: aiohttp.ClientSession | None = None
        self._tokens = TokenCache()
        self._basic: dict[str, str] = {}  # api_host -> Basic header (registry asked for it)
        self.max_manifest_bytes = max_manifest_bytes
        self.max_config_bytes = max_config_bytes
        self.max_image_compressed_bytes = max_image_compressed_bytes
        self.max_layers = max_layers

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> RegistryClient:
        # Size caps (DOCKWISE_MAX_MANIFEST_BYTES, _CONFIG_BYTES, _COMPRESSED_BYTES).
        kwargs.setdefault("max_manifest_bytes", settings.max_manifest_bytes)
        kwargs.setdefault("max_config_bytes", settings.max_config_bytes)
        kwargs.setdefault("max_image_compressed_bytes", settings.max_compressed_bytes)
        return cls(
            credentials=load_credentials(settings.docker_config),
            insecure_registries=settings.insecure_registries,
            **kwargs,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = self._connector_factory() if self._connector_factory else None
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                headers={"User-Agent": self._user_agent, "Accept-Encoding": "identity"},
            )
        return self._session

    def target(self, ref: Reference, addresses: Iterable[IPAddress] = ()) -> _Target:
        """Where ``ref``'s registry is reached: plain HTTP when the insecure-registries
        policy says so for its ``host[:port]`` (or, for address ranges, for ``addresses``,
        what its name resolves to), else HTTPS."""
        domain = ref.domain.lower()
        api_host = DOCKER_HUB_API if domain == "docker.io" else domain
        plain = self.trust.registry_plain_http(domain, addresses)
        return _Target(ref, "http" if plain else "https", api_host)

    async def _target(self, ref: Reference) -> _Target:
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

    # ----------------------------------------------------------------- public API

    async def get_manifest(
        self, ref: Reference, reference: str | None = None, expected_digest: str | None = None
    ) -> Manifest:
        """Fetch the manifest or index for ``reference`` (tag or digest; default: the
        reference's digest, else its tag) and check its digest against ``expected_digest``,
        the digest asked for, or the registry's ``Docker-Content-Digest``."""
        reference = reference or ref.reference
        if expected_digest is None and ":" in reference:
            expected_digest = validate_digest(reference)
        by_tag = expected_digest is None
        key = (
            f"manifest:{ref.name}@{expected_digest}"
            if expected_digest
            else f"manifest:{ref.name}:{reference}"
        )
        if self.cache is not None:
            hit = await self.cache.get(key)
            count_cache("manifest", hit is not None)
            if hit is not None:
                media_type, body = hit
                digest = expected_digest or _sha256(body)
                if expected_digest:
                    _verify(body, expected_digest, f"cached manifest of {ref}")
                return _manifest(media_type, digest, body, ref)
        target = await self._target(ref)
        url = f"{target.base}/manifests/{reference}"

        async def fetch() -> tuple[bytes, str, str | None]:
            async with await self._open(target, url, accept=ACCEPT, what="manifest") as resp:
                body = await _read_limited(resp, self.max_manifest_bytes, f"manifest of {ref}")
                return (
                    body,
                    resp.headers.get("Content-Type", ""),
                    resp.headers.get("Docker-Content-Digest"),
                )

        body, content_type, header_digest = await self._with_retries(target.api_host, fetch)
        claimed = expected_digest or header_digest
        if claimed:
            digest = _content_digest(claimed, f"the registry's answer for {ref}")
            _verify(body, digest, f"manifest of {ref}")
        else:
            digest = _sha256(body)  # by tag without a digest header: nothing to check against
        media_type = content_type.split(";")[0].strip()
        manifest = _manifest(media_type, digest, body, ref)
        if self.cache is not None:
            await self.cache.set(f"manifest:{ref.name}@{digest}", manifest.media_type, body, None)
            if by_tag:
                await self.cache.set(key, manifest.media_type, body, self.tag_ttl)
        return manifest

    async def get_blob(
        self, ref: Reference, digest: str, limit: int | None = None, what: str | None = None
    ) -> bytes:
        """A small blob (an image config) in memory, digest-checked; at most ``limit``
        bytes (default: the config cap). ``what`` names it in errors."""
        limit = self.max_config_bytes if limit is None else limit
        label = what or f"blob {digest}"
        key = f"blob:{ref.name}@{digest}"
        if self.cache is not None:
            hit = await self.cache.get(key)
            count_cache("blob", hit is not None)
            if hit is not None:
                _verify(hit[1], digest, f"cached blob {digest}")
                return hit[1]
        target = await self._target(ref)
        url = f"{target.base}/blobs/{digest}"

        async def fetch() -> bytes:
            async with await self._open(target, url, what=f"blob {digest}") as resp:
                return await _read_limited(resp, limit, label)

        body = await self._with_retries(target.api_host, fetch)
        _verify(body, digest, f"blob {digest} of {ref}")
        if self.cache is not None:
            await self.cache.set(key, "application/octet-stream", body, None)
        return body

    async def stream_blob(
        self, ref: Reference, digest: str, size: int | None = None, limit: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream a blob in chunks, hashing as it goes; raises ContentError after the last
        chunk if the bytes do not match ``digest`` (or earlier if they exceed ``size``, or
        ``limit`` when the size is unknown)."""
        hasher = _hasher(digest)
        target = await self._target(ref)
        url = f"{target.base}/blobs/{digest}"
        resp = await self._with_retries(
            target.api_host, lambda: self._open(target, url, what=f"layer {digest}")
        )
        received = 0
        try:
            async for chunk in resp.content.iter_chunked(CHUNK):
                received += len(chunk)
                if size is not None and received > size:
                    raise ContentError(f"layer {digest} of {ref} is larger than its size {size}")
                if limit is not None and received > limit:
                    raise ContentError(
                        f"layer {digest} of {ref} is too large (over {_human(limit)})"
                    )
                hasher.update(chunk)
                BYTES_FETCHED.labels(source="registry").inc(len(chunk))
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unreachable(
                f"download of layer {digest} from {target.api_host} broke off ({_why(exc)})"
            ) from exc
        finally:
            resp.release()
        actual = f"{digest.partition(':')[0]}:{hasher.hexdigest()}"
        if actual != digest:
            raise ContentError(f"layer {digest} of {ref} does not match its digest")
        if size is not None and received != size:
            raise ContentError(f"layer {digest} of {ref} is {received} bytes, expected {size}")

    # ----------------------------------------------------------------- HTTP core

    async def _with_retries(self, host: str, call: Callable[[], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Retry),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await call()
        except _Retry as exc:
            if exc.status == 429:
                raise Busy(
                    f"registry {exc.host} is rate-limiting requests (HTTP 429); try again later"
                ) from None
            if exc.status is None:
                raise Unreachable(
                    f"connection to registry {exc.host} keeps breaking off or timing out"
                ) from None
            raise Unreachable(
                f"registry {exc.host} keeps failing (HTTP {exc.status}); try again later"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retry) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))

    async def _open(
        self, target: _Target, url: str, *, what: str, accept: str | None = None
    ) -> aiohttp.ClientResponse:
        """GET ``url`` answering auth challenges and following redirects by hand. Returns
        a 2xx response (caller releases it); raises _Retry for transient failures."""
        session = self._get_session()
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
            sent_auth = self._auth_header(target) if on_registry else None
            if sent_auth:
                headers["Authorization"] = sent_auth
            try:
                if self.url_guard is not None:
                    self.url_guard(current)
                resp = await session.get(current, headers=headers, allow_redirects=False)
            except Forbidden as exc:
                if on_registry and redirects == 0:  # the registry itself, not a redirect
                    raise _how_to_allow(exc, target.ref.domain) from None
                raise
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                raise Unreachable(f"cannot reach registry {host}: {_why(exc)}") from exc
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                raise _Retry(host, None) from exc  # reset, disconnect, read timeout
            except aiohttp.ClientError as exc:
                raise Unreachable(f"cannot talk to registry {host}: {_why(exc)}") from exc
            status = resp.status
            if status in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location")
                resp.release()
                redirects += 1
                if not location or redirects > MAX_REDIRECTS:
                    raise ContentError(f"registry {target.api_host} sent a broken redirect")
                current = urllib.parse.urljoin(current, location)
                continue
            if status == 401 and on_registry and not authenticated:
                challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                resp.release()
                await self._authenticate(target, challenge)
                authenticated = True
                continue
            if status == 429 or status >= 500:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                resp.release()
                if retry_after is not None and retry_after > self.max_retry_after:
                    raise Busy(
                        f"registry {host} asks to wait {retry_after:.0f}s (HTTP {status}); "
                        "try again later"
                    )
                raise _Retry(host, status, retry_after)
            if status >= 400:
                try:
                    body = await resp.content.read(64 * 1024)
                except (aiohttp.ClientError, TimeoutError):
                    body = b""
                finally:
                    resp.release()
                raise self._error(target, status, body, what, authenticated or bool(sent_auth))
            if status != 200 and status != 206:
                resp.release()
                raise ContentError(f"registry {host} answered HTTP {status} for the {what}")
            return resp

    def _auth_header(self, target: _Target) -> str | None:
        basic = self._basic.get(target.api_host)
        if basic:
            return basic
        token = self._tokens.get(self._token_key(target))
        return f"Bearer {token}" if token else None

    def _token_key(self, target: _Target) -> tuple[str, str, str]:
        creds = self.credentials.for_registry(target.ref.domain)
        return (target.api_host, target.scope, creds.username if creds else "")

    async def _authenticate(self, target: _Target, challenge: Challenge | None) -> None:
        domain = target.ref.domain
        creds = await self.credentials.resolve(domain)
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            raise Unauthorized(f"registry {domain} asks for a login method dockwise cannot use")
        if challenge.scheme == "basic":
            if creds is None:
                raise Unauthorized(
                    f"registry {domain} needs a login: add credentials with docker login {domain}"
                )
            self._basic[target.api_host] = creds.basic_header()
            return
        realm = challenge.realm
        if not realm or urllib.parse.urlsplit(realm).scheme not in ("http", "https"):
            raise Unauthorized(f"registry {domain} sent an unusable token realm")
        query = {"scope": target.scope}
        if challenge.params.get("service"):
            query["service"] = challenge.params["service"]
        headers: dict[str, str] = {}
        # Credentials go to the realm the registry names, but never in clear text unless
        # the registry itself is reached over plain http (explicitly configured insecure).
        realm_is_tls = urllib.parse.urlsplit(realm).scheme == "https"
        if creds is not None and (realm_is_tls or target.scheme == "http"):
            headers["Authorization"] = creds.basic_header()
        sep = "&" if "?" in realm else "?"
        url = realm + sep + urllib.parse.urlencode(query)
        realm_host = urllib.parse.urlsplit(realm).netloc
        if self.url_guard is not None:
            self.url_guard(url)

        async def fetch() -> dict[str, Any]:
            try:
                async with self._get_session().get(
                    url, headers=headers, allow_redirects=False
                ) as resp:
                    if resp.status in (401, 403):
                        if "Authorization" in headers and creds is not None:
                            raise Unauthorized(
                                f"login to {domain} as {creds.username} was refused: "
                                "check the stored password"
                            )
                        raise Unauthorized(f"{domain} refused an anonymous login")
                    if resp.status == 429 or resp.status >= 500:
                        raise _Retry(
                            realm_host,
                            resp.status,
                            parse_retry_after(resp.headers.get("Retry-After")),
                        )
                    if resp.status != 200:
                        raise Unauthorized(f"token service of {domain} answered HTTP {resp.status}")
                    body = await _read_limited(resp, 1024 * 1024, "token")
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                raise Unreachable(f"cannot reach token service {realm_host}: {_why(exc)}") from exc
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                raise _Retry(realm_host, None) from exc
            except aiohttp.ClientError as exc:
                raise Unreachable(
                    f"cannot talk to token service {realm_host}: {_why(exc)}"
                ) from exc
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise ContentError(f"token service of {domain} sent something that is not JSON")
            return data

        data = await self._with_retries(realm_host, fetch)
        token = data.get("token") or data.get("access_token")
        if not isinstance(token, str) or not token:
            raise ContentError(f"token service of {domain} sent no token")
        expires_in = data.get("expires_in")
        lifetime = (
            float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 60.0
        )
        self._tokens.set(self._token_key(target), token, lifetime)

    def _error(
        self, target: _Target, status: int, body: bytes, what: str, had_auth: bool
    ) -> Exception:
        ref = target.ref
        codes: set[str] = set()
        try:
            data = json.loads(body)
            for err in data.get("errors") or []:
                if isinstance(err, dict) and isinstance(err.get("code"), str):
                    codes.add(err["code"])
        except (ValueError, AttributeError, TypeError):
            pass
        if status == 404 or codes & _NOT_FOUND_CODES:
            if what == "manifest":
                return ImageNotFound(f"image {ref} not found")
            return ImageNotFound(f"{what} of image {ref} not found in {ref.domain}")
        if status == 401:
            if had_auth and self.credentials.for_registry(ref.domain) is not None:
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


def _how_to_allow(exc: Forbidden, domain: str) -> Forbidden:
    """The guard's refusal of a registry the reference names, with the exact setting that
    allows it (redirect targets and token services get no such hint)."""
    return Forbidden(
        f"{exc.message}; to allow this registry, the bot's operator adds {domain} to "
        f"DOCKWISE_INSECURE_REGISTRIES (e.g. DOCKWISE_INSECURE_REGISTRIES={domain})"
    )


def _why(exc: BaseException) -> str:
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


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _human(size: int) -> str:
    """Binary units for limits in messages: 4 MiB, 2 GiB, 1536 bytes."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"


async def _read_limited(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """Read a small body whole, refusing more than ``limit`` bytes; a broken-off
    transfer is transient (_Retry)."""
    if resp.content_length is not None and resp.content_length > limit:
        raise ContentError(
            f"{what} is too large ({resp.content_length} bytes, the limit is {_human(limit)})"
        )
    data = bytearray()
    try:
        async for chunk in resp.content.iter_chunked(CHUNK):
            data += chunk
            if len(data) > limit:
                raise ContentError(f"{what} is too large (over the {_human(limit)} limit)")
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        raise _Retry(resp.url.host or "registry", None) from exc
    return bytes(data)


def _manifest(media_type: str, digest: str, body: bytes, ref: Reference) -> Manifest:
    try:
        data = json.loads(body)
    except ValueError:
        raise ContentError(f"manifest of {ref} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ContentError(f"manifest of {ref} is not a JSON object")
    declared = data.get("mediaType")
    if isinstance(declared, str) and declared:
        media_type = declared
    if media_type in DOCKER_SCHEMA1 or data.get("schemaVersion") == 1:
        raise ContentError(
            f"{ref} uses the retired Docker schema 1 manifest format, which dockwise cannot read"
        )
    if media_type not in INDEX_TYPES | MANIFEST_TYPES:
        if isinstance(data.get("manifests"), list):
            media_type = OCI_INDEX
        elif isinstance(data.get("layers"), list):
            media_type = OCI_MANIFEST
        else:
            raise ContentError(f"{ref} has an unsupported manifest type {media_type!r}")
    return Manifest(media_type, digest, body, data)


# --------------------------------------------------------------------------- source


class RegistrySource:
    """``ImageSource`` over a registry. Shares (does not own) its ``RegistryClient``
    unless built with ``from_settings``; ``aclose()`` closes an owned client."""

    name: Literal["registry", "docker"] = "registry"

    def __init__(self, client: RegistryClient, *, owns_client: bool = False) -> None:
        self.client = client
        self._owns = owns_client

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> RegistrySource:
        return cls(RegistryClient.from_settings(settings, **kwargs), owns_client=True)

    async def aclose(self) -> None:
        if self._owns:
            await self.client.aclose()

    async def resolve(self, reference: str, platform: Platform) -> ResolvedImage:
        ref = parse_reference(reference)
        try:
            manifest = await self.client.get_manifest(ref)
        except ImageNotFound:
            if ref.digest is None:
                raise
            raise await self._digest_not_found(ref) from None
        top_digest = manifest.digest
        platforms: list[Platform] = []
        for _depth in range(2):
            if not manifest.is_index:
                break
            entries = _index_entries(manifest, ref)
            for bare in _unlabelled_entries(manifest)[:MAX_UNLABELLED_ENTRIES]:
                declared = await self._declared_platform(ref, bare)
                if declared is not None:
                    entries.append((declared, bare))
            platforms = _unique([p for p, _ in entries])
            entry = pick_platform(entries, platform)
            if entry is None:
                available = ", ".join(str(p) for p in platforms) or "none"
                raise ImageNotFound(
                    f"image {ref} has no {platform} variant (available: {available})"
                )
            manifest = await self.client.get_manifest(
                ref, entry["digest"], expected_digest=entry["digest"]
            )
        if manifest.is_index:
            raise ContentError(f"{ref} nests indexes too deeply")
        config_desc = manifest.data.get("config")
        if not isinstance(config_desc, dict) or not isinstance(config_desc.get("digest"), str):
            raise ContentError(f"manifest of {ref} has no config")
        config_type = config_desc.get("mediaType")
        if isinstance(config_type, str) and config_type not in IMAGE_CONFIG_TYPES:
            raise ContentError(f"{ref} is not a container image (its config is {config_type})")
        config_digest = _content_digest(config_desc["digest"], f"manifest of {ref}")
        try:
            config = json.loads(
                await self.client.get_blob(ref, config_digest, what=f"config of {ref}")
            )
        except ValueError:
            raise ContentError(f"config of {ref} is not valid JSON") from None
        if not isinstance(config, dict):
            raise ContentError(f"config of {ref} is not a JSON object")
        actual = Platform(
            str(config.get("os") or platform.os),
            str(config.get("architecture") or platform.architecture),
            str(config["variant"]) if config.get("variant") else None,
        )
        if not platforms:
            platforms = [actual]
        return ResolvedImage(
            reference=str(ref),
            source="registry",
            digest=ref.digest or top_digest,
            platform=actual,
            platforms=platforms,
            config=config,
            layers=self._layers(ref, manifest, config),
        )

    async def _declared_platform(self, ref: Reference, entry: dict[str, Any]) -> Platform | None:
        """The platform of an index entry written without ``platform``, read from the
        config of the manifest it points to (as skopeo / containers-image do); None when
        it is not a container image (an index, an artifact, a config without os/arch)."""
        digest = _content_digest(entry["digest"], f"index of {ref}")
        manifest = await self.client.get_manifest(ref, digest, expected_digest=digest)
        desc = manifest.data.get("config")
        if manifest.is_index or not isinstance(desc, dict):
            return None
        if desc.get("mediaType") not in IMAGE_CONFIG_TYPES:
            return None
        config_digest = _content_digest(desc.get("digest"), f"manifest of {ref}")
        try:
            config = json.loads(
                await self.client.get_blob(ref, config_digest, what=f"config of {ref}")
            )
        except ValueError:
            return None
        if not isinstance(config, dict):
            return None
        return _platform_of({"platform": config})

    async def _digest_not_found(self, ref: Reference) -> ImageNotFound:
        """Why ``name[:tag]@digest`` was not found: the tag exists with another digest,
        neither exists, or (no tag given) the repository has no such manifest."""
        shown = ref.familiar_name
        if ref.tag is None:
            return ImageNotFound(f"{shown} has no image with digest {ref.digest}")
        try:
            tagged = await self.client.get_manifest(ref, ref.tag)
        except ImageNotFound:
            return ImageNotFound(
                f"image {shown}:{ref.tag}@{ref.digest} not found: neither the tag nor the "
                "digest exists"
            )
        return ImageNotFound(
            f"{shown}:{ref.tag} exists but its digest is {tagged.digest}, not {ref.digest}: "
            f"use {shown}:{ref.tag} for the current image, or check the digest"
        )

    def _layers(
        self, ref: Reference, manifest: Manifest, config: dict[str, Any]
    ) -> list[LayerBlob]:
        descriptors = manifest.data.get("layers")
        if not isinstance(descriptors, list):
            raise ContentError(f"manifest of {ref} has no layer list")
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(descriptors):
            diff_ids = [None] * len(descriptors)
        client = self.client
        if len(descriptors) > client.max_layers:
            raise ContentError(
                f"{ref} has {len(descriptors)} layers, more than the {client.max_layers} "
                "dockwise reads"
            )
        declared = sum(
            d["size"]
            for d in descriptors
            if isinstance(d, dict) and isinstance(d.get("size"), int) and d["size"] > 0
        )
        budget = client.max_image_compressed_bytes
        if declared > budget:
            raise ContentError(
                f"{ref} is too large to explain: its layers are {declared} bytes compressed, "
                f"over the {_human(budget)} limit"
            )
        layers = []
        for desc, diff_id in zip(descriptors, diff_ids, strict=True):
            if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
                raise ContentError(f"manifest of {ref} has a malformed layer entry")
            digest = _content_digest(desc["digest"], f"manifest of {ref}")
            size = desc.get("size")
            size = size if isinstance(size, int) and size >= 0 else None
            layers.append(
                LayerBlob(
                    digest=digest,
                    size=size,
                    compression=compression_for(str(desc.get("mediaType", ""))),
                    # A layer without a declared size may use what the others leave.
                    open=_opener(self.client, ref, digest, size, budget - declared),
                    diff_id=diff_id if isinstance(diff_id, str) else None,
                )
            )
        return layers


def _opener(
    client: RegistryClient, ref: Reference, digest: str, size: int | None, limit: int
) -> Callable[[], AsyncIterator[bytes]]:
    def open_stream() -> AsyncIterator[bytes]:
        return client.stream_blob(ref, digest, size, None if size is not None else limit)

    return open_stream


def _index_entries(manifest: Manifest, ref: Reference) -> list[tuple[Platform, dict[str, Any]]]:
    """The index's entries with a usable ``platform`` (``unknown/unknown`` entries, i.e.
    attestations and signatures, are left out)."""
    raw = manifest.data.get("manifests")
    if not isinstance(raw, list):
        raise ContentError(f"index of {ref} has no manifest list")
    entries = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            continue
        plat = _platform_of(entry)
        if plat is not None:
            _content_digest(entry["digest"], f"index of {ref}")
            entries.append((plat, entry))
    return entries


def _unlabelled_entries(manifest: Manifest) -> list[dict[str, Any]]:
    """The index's entries written without ``platform``: their platform is in their config."""
    raw = manifest.data.get("manifests")
    return [
        entry
        for entry in (raw if isinstance(raw, list) else [])
        if isinstance(entry, dict)
        and isinstance(entry.get("digest"), str)
        and not isinstance(entry.get("platform"), dict)
    ]


def _unique(items: list[Platform]) -> list[Platform]:
    seen: dict[Platform, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


__all__ = [
    "Manifest",
    "ManifestCache",
    "MemoryManifestCache",
    "RegistryClient",
    "RegistrySource",
    "compression_for",
    "parse_retry_after",
    "pick_platform",
]
