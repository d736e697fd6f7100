"""Images from OCI / Docker registries: ``RegistrySource``, the ``ImageSource`` that turns a
reference + platform into a ``ResolvedImage`` whose layers stream lazily.

The registry protocol itself lives in ``bot.image.remote`` (after go-containerregistry's
``remote`` and ``remote/transport``): ``transport`` (session, scheme, SSRF guard hook-up,
redirects, retries), ``authn`` (Basic / Bearer handshake with Docker's credentials),
``errors`` (library errors and HTTP answers turned into dockwise's one-line errors, in one
place) and ``client`` (``RegistryClient``: manifests, indexes, blobs). This module picks the
platform from an index (entries without ``platform`` are read from their config, as skopeo
does), checks the manifest's config and layer list against the caps, and says why a digest
was not found.

Registries that ``DOCKWISE_INSECURE_REGISTRIES`` marks plain-HTTP (``bot.netguard.Trust``,
the policy the address guard uses too) are reached over http, every other registry over
https; ``docker.io`` is served by ``registry-1.docker.io``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal

from bot.errors import ContentError, ImageNotFound
from bot.image.reference import Reference, parse_reference
from bot.image.remote.client import (
    ACCEPT,
    CONFIG_MAX,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    IMAGE_COMPRESSED_MAX,
    INDEX_TYPES,
    MANIFEST_MAX,
    MANIFEST_TYPES,
    MAX_LAYERS,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    ManifestCache,
    MemoryManifestCache,
    RegistryClient,
    content_digest,
    parse_manifest,
)
from bot.image.remote.transport import DOCKER_HUB_API, human, parse_retry_after
from bot.image.source import Compression, LayerBlob, Platform, ResolvedImage

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)

IMAGE_CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)
MAX_UNLABELLED_ENTRIES = 16  # index entries without "platform" whose config is read
_manifest = parse_manifest  # the name tests and fuzzers know


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
        config_digest = content_digest(config_desc["digest"], f"manifest of {ref}")
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
        digest = content_digest(entry["digest"], f"index of {ref}")
        manifest = await self.client.get_manifest(ref, digest, expected_digest=digest)
        desc = manifest.data.get("config")
        if manifest.is_index or not isinstance(desc, dict):
            return None
        if desc.get("mediaType") not in IMAGE_CONFIG_TYPES:
            return None
        config_digest = content_digest(desc.get("digest"), f"manifest of {ref}")
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
                f"over the {human(budget)} limit"
            )
        layers = []
        for desc, diff_id in zip(descriptors, diff_ids, strict=True):
            if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
                raise ContentError(f"manifest of {ref} has a malformed layer entry")
            digest = content_digest(desc["digest"], f"manifest of {ref}")
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
            content_digest(entry["digest"], f"index of {ref}")
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
    "ACCEPT",
    "CONFIG_MAX",
    "DOCKER_HUB_API",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "DOCKER_SCHEMA1",
    "IMAGE_COMPRESSED_MAX",
    "INDEX_TYPES",
    "MANIFEST_MAX",
    "MANIFEST_TYPES",
    "MAX_LAYERS",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Manifest",
    "ManifestCache",
    "MemoryManifestCache",
    "RegistryClient",
    "RegistrySource",
    "compression_for",
    "parse_retry_after",
    "pick_platform",
]
