"""``RegistryClient``: the registry API dockwise uses (go-containerregistry's ``remote``
fetcher): manifests and indexes, small blobs (image configs) in memory, layers streamed,
everything digest-checked and size-capped, manifests and configs kept in a cache.

HTTP, retries and the SSRF guard are ``transport``'s, the login handshake is ``authn``'s,
and every failure is worded by ``errors``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from bot.cache.base import ManifestCache as ManifestCache
from bot.cache.memory import MemoryManifestCache as MemoryManifestCache
from bot.errors import ContentError, DockwiseError, Forbidden, ImageNotFound, InvalidReference
from bot.image.auth import CredentialStore, load_credentials
from bot.image.reference import Reference, validate_digest
from bot.image.remote import errors
from bot.image.remote.authn import Authenticator
from bot.image.remote.transport import (
    CHUNK,
    Target,
    Transport,
    human,
    parse_mirrors,
    read_limited,
)
from bot.netguard import IPAddress, Trust
from bot.observability import BYTES_FETCHED, count_cache

if TYPE_CHECKING:
    from bot.config import Settings

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

log = logging.getLogger(__name__)
T = TypeVar("T")

MANIFEST_MAX = 4 * 1024 * 1024  # a manifest or index
CONFIG_MAX = 8 * 1024 * 1024  # an image config
IMAGE_COMPRESSED_MAX = 2 * 1024 * 1024 * 1024  # all layers of one image, as downloaded
MAX_LAYERS = 1000  # filesystem layers per image (Docker itself stops at 127)
_HASHES = {"sha256", "sha384", "sha512"}


# --------------------------------------------------------------------------- cache seam


# ManifestCache and MemoryManifestCache live in bot.cache (re-exported here).


# --------------------------------------------------------------------------- content


@dataclass(frozen=True, slots=True)
class Manifest:
    media_type: str
    digest: str
    body: bytes = field(repr=False)
    data: dict[str, Any] = field(repr=False)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def hasher(digest: str) -> Any:
    """A hashlib object for ``digest``'s algorithm (sha256, sha384, sha512)."""
    algorithm = digest.partition(":")[0]
    if algorithm not in _HASHES:
        raise ContentError(f"unsupported digest algorithm in {digest!r}")
    return hashlib.new(algorithm)


def verify(data: bytes, digest: str, what: str) -> None:
    """Raise ContentError unless ``data`` hashes to ``digest``."""
    h = hasher(digest)
    h.update(data)
    if f"{digest.partition(':')[0]}:{h.hexdigest()}" != digest:
        raise ContentError(f"{what} does not match its digest {digest}")


def content_digest(value: object, where: str) -> str:
    """A digest found inside registry content; malformed ones are a ContentError."""
    try:
        return validate_digest(value if isinstance(value, str) else "")
    except InvalidReference:
        raise ContentError(f"{where} holds a malformed digest {str(value)[:80]!r}") from None


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_manifest(media_type: str, digest: str, body: bytes, ref: Reference) -> Manifest:
    """A manifest or index from its bytes; ContentError for JSON that is not one (or the
    retired schema 1)."""
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


# --------------------------------------------------------------------------- client


class RegistryClient:
    """Registry client. Use one per process; ``await aclose()`` at the end."""

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
        mirrors: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``mirrors``: pull-through mirrors per registry domain (``parse_mirrors``), tried
        first, without retries; on any failure but "not found" a mirror rests for
        ``MIRROR_REST`` seconds, and the registry itself answers (dockerd's
        ``registry-mirrors``).

        ``insecure_registries``: ``DOCKWISE_INSECURE_REGISTRIES`` entries or the parsed
        ``Trust`` (which registries are plain HTTP; raises ``InvalidInput`` for a malformed
        entry). ``url_guard`` is called with every URL before it is requested (registry,
        token realm, redirect targets) and may raise ``bot.errors.Forbidden`` (SSRF policy);
        ``connector_factory`` makes the session's connector (e.g. an address-checking one)."""
        self.credentials = credentials if credentials is not None else CredentialStore()
        # The same policy object the address guard uses (DOCKWISE_INSECURE_REGISTRIES).
        self.trust = (
            insecure_registries
            if isinstance(insecure_registries, Trust)
            else Trust.parse(insecure_registries)
        )
        self.transport = Transport(
            trust=self.trust,
            url_guard=url_guard,
            connector_factory=connector_factory,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            max_retry_after=max_retry_after,
            user_agent=user_agent,
            mirrors=mirrors,
        )
        self.auth = Authenticator(self.credentials, self.transport)
        self.url_guard = url_guard
        self.cache = cache
        self.tag_ttl = tag_ttl
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
        kwargs.setdefault("mirrors", parse_mirrors(settings.registry_mirrors))
        return cls(
            credentials=load_credentials(settings.docker_config),
            insecure_registries=settings.insecure_registries,
            **kwargs,
        )

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def target(self, ref: Reference, addresses: Iterable[IPAddress] = ()) -> Target:
        """Where ``ref``'s registry is reached (see ``Transport.target``)."""
        return self.transport.target(ref, addresses)

    # ----------------------------------------------------------------- mirrors

    async def _fetch(self, ref: Reference, call: Callable[[Target], Awaitable[T]]) -> T:
        """``call(target)`` on ``ref``'s mirrors in order (one attempt each), then on the
        registry itself (with retries). A mirror's "not found" just moves on; any other
        mirror failure also makes it rest (``Transport.mirror_failed``)."""
        for target in self.transport.mirror_targets(ref):
            try:
                return await self.transport.with_retries(
                    target.api_host, functools.partial(call, target), attempts=1
                )
            except DockwiseError as exc:
                missing = isinstance(exc, ImageNotFound)  # a mirror may not have it yet
                if not missing:
                    self.transport.mirror_failed(target)
                log.log(
                    logging.INFO if missing else logging.WARNING,
                    "registry mirror %s failed for %s (%s); asking %s",
                    target.api_host,
                    ref.name,
                    type(exc).__name__,
                    ref.domain,
                )
        target = await self.transport.resolve_target(ref)
        return await self.transport.with_retries(target.api_host, lambda: call(target))

    # ----------------------------------------------------------------- API

    async def head_digest(self, ref: Reference, tag: str) -> str | None:
        """The digest ``tag`` points to now, from a HEAD request's ``Docker-Content-Digest``
        (Docker Hub does not count HEAD against its pull limit); None when the registry
        sends no usable digest. Raises what ``get_manifest`` raises."""

        async def head(target: Target) -> str | None:
            url = f"{target.base}/manifests/{tag}"
            resp = await self.transport.open(
                target, url, accept=ACCEPT, what="manifest", auth=self.auth, method="HEAD"
            )
            async with resp:
                value = resp.headers.get("Docker-Content-Digest")
            try:
                return validate_digest(value) if value else None
            except InvalidReference:
                return None

        return await self._fetch(ref, head)

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
        target = await self.transport.resolve_target(ref)
        if self.url_guard is not None:
            # Before the cache too: a manifest cached while a registry was allowed must not
            # be served once the policy refuses it (every later read starts here).
            try:
                self.url_guard(f"{target.base}/manifests/{reference}")
            except Forbidden as exc:
                raise errors.how_to_allow(exc, ref.domain) from None
        if self.cache is not None:
            hit = await self.cache.get(key)
            count_cache("manifest", hit is not None)
            if hit is not None:
                media_type, body = hit
                digest = expected_digest or sha256(body)
                if expected_digest:
                    verify(body, expected_digest, f"cached manifest of {ref}")
                return parse_manifest(media_type, digest, body, ref)
        if by_tag:
            # HEAD the tag, then the manifest by digest: from the cache when it has it.
            try:
                head = await self.head_digest(ref, reference)
            except ContentError:
                head = None  # e.g. 405 for HEAD: the GET below tries
            if head is not None:
                try:
                    manifest = await self.get_manifest(ref, head, expected_digest=head)
                except ImageNotFound:  # moved and deleted since, or a lying HEAD: GET the tag
                    pass
                else:
                    if self.cache is not None:
                        await self.cache.set(key, manifest.media_type, manifest.body, self.tag_ttl)
                    return manifest

        async def fetch(target: Target) -> tuple[bytes, str, str | None]:
            url = f"{target.base}/manifests/{reference}"
            resp = await self.transport.open(
                target, url, accept=ACCEPT, what="manifest", auth=self.auth
            )
            async with resp:
                body = await read_limited(resp, self.max_manifest_bytes, f"manifest of {ref}")
                return (
                    body,
                    resp.headers.get("Content-Type", ""),
                    resp.headers.get("Docker-Content-Digest"),
                )

        body, content_type, header_digest = await self._fetch(ref, fetch)
        claimed = expected_digest or header_digest
        if claimed:
            digest = content_digest(claimed, f"the registry's answer for {ref}")
            verify(body, digest, f"manifest of {ref}")
        else:
            digest = sha256(body)  # by tag without a digest header: nothing to check against
        media_type = content_type.split(";")[0].strip()
        manifest = parse_manifest(media_type, digest, body, ref)
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
                verify(hit[1], digest, f"cached blob {digest}")
                return hit[1]

        async def fetch(target: Target) -> bytes:
            url = f"{target.base}/blobs/{digest}"
            resp = await self.transport.open(target, url, what=f"blob {digest}", auth=self.auth)
            async with resp:
                body = await read_limited(resp, limit, label)
            verify(body, digest, f"blob {digest} of {ref}")  # a bad mirror: next one
            return body

        body = await self._fetch(ref, fetch)
        verify(body, digest, f"blob {digest} of {ref}")
        if self.cache is not None:
            await self.cache.set(key, "application/octet-stream", body, None)
        return body

    async def stream_blob(
        self, ref: Reference, digest: str, size: int | None = None, limit: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream a blob in chunks, hashing as it goes; raises ContentError after the last
        chunk if the bytes do not match ``digest`` (or earlier if they exceed ``size``, or
        ``limit`` when the size is unknown)."""
        h = hasher(digest)

        async def open_blob(target: Target) -> tuple[Target, aiohttp.ClientResponse]:
            url = f"{target.base}/blobs/{digest}"
            resp = await self.transport.open(target, url, what=f"layer {digest}", auth=self.auth)
            return target, resp

        target, resp = await self._fetch(ref, open_blob)
        received = 0
        try:
            async for chunk in resp.content.iter_chunked(CHUNK):
                received += len(chunk)
                if size is not None and received > size:
                    raise ContentError(f"layer {digest} of {ref} is larger than its size {size}")
                if limit is not None and received > limit:
                    raise ContentError(
                        f"layer {digest} of {ref} is too large (over {human(limit)})"
                    )
                h.update(chunk)
                BYTES_FETCHED.labels(source="registry").inc(len(chunk))
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.broke_off(exc, f"layer {digest}", target.api_host) from exc
        finally:
            resp.release()
        actual = f"{digest.partition(':')[0]}:{h.hexdigest()}"
        if actual != digest:
            raise ContentError(f"layer {digest} of {ref} does not match its digest")
        if size is not None and received != size:
            raise ContentError(f"layer {digest} of {ref} is {received} bytes, expected {size}")
