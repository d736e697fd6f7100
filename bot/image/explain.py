"""``Explainer``: a named image -> ``ImageFacts`` -> ``Reply``.

1. Resolve the reference with a source: ``docker`` (the local engine), ``registry``, or
   ``auto`` (the engine when it has the image, else the registry; no engine is normal).
2. Scan every filesystem layer once (bot.image.layers), at most two at a time (an engine
   export's layers all at once: they come as one stream), each layer's scan cached by digest
   in SQLite (bot.cache.sqlite): a layer shared with an image analysed before, by this
   process or another one using the same cache dir, is not downloaded again.
3. Stack the scans into facts (bot.image.analysis), add advice and text (bot.image.render).

Concurrent requests share work in-process: one resolve per (source, reference, platform),
one analysis per resolved image digest, one scan per layer digest; the others await it.
The whole explanation is bounded by ``Settings.explain_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import platform as host_platform
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

from bot.cache.base import LayerFactsCache
from bot.cache.share import Shared
from bot.cache.sqlite import (
    SeenImage,
    SqliteImageIndex,
    SqliteLayerCache,
    SqliteManifestCache,
)
from bot.config import Settings, get_settings
from bot.errors import ContentError, ImageNotFound, InvalidInput, Unreachable
from bot.image.analysis import image_facts
from bot.image.facts import ImageFacts
from bot.image.layers import ByteBudget, LayerScan, ScanLimits, scan_layer
from bot.image.render import finish, human, render
from bot.image.source import ImageSource, LayerBlob, Platform, ResolvedImage
from bot.limits import report_stage, with_timeout
from bot.observability import count_cache
from bot.progress import ExplainProgress, ProgressCallback
from bot.reply import Reply

if TYPE_CHECKING:
    from bot.cache.base import ManifestCache
    from bot.cache.redis import Caches

log = logging.getLogger(__name__)


SourceChoice = Literal["auto", "registry", "docker"]
MAX_PARALLEL_LAYERS = 2
_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def default_platform() -> Platform:
    """linux on this machine's architecture (amd64 when unknown)."""
    return Platform("linux", _MACHINES.get(host_platform.machine().lower(), "amd64"))


def _diff_ids(resolved: ResolvedImage) -> list[str]:
    rootfs = resolved.config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return []
    return [str(i) for i in ids]


def base_match(bases: list[SeenImage], total: int) -> dict[str, Any] | None:
    """The base-image guess from layer matching: the image seen before whose layers are the
    longest proper prefix of this one's. Confidence "high" when one image (one digest, maybe
    several tags) has exactly those layers, "medium" when different images share them."""
    if not bases:
        return None
    first = bases[0]
    digests = {b.digest for b in bases}
    return {
        "reference": first.reference,
        "digest": first.digest or None,
        "layers": first.layers,
        "of": total,
        "confidence": "high" if len(digests) == 1 else "medium",
        "also": [b.reference for b in bases[1:5]],
    }


class Explainer:
    def __init__(
        self,
        settings: Settings | None = None,
        sources: Mapping[str, ImageSource] | None = None,
        *,
        layer_cache: LayerFactsCache | None = None,
        manifest_cache: ManifestCache | None = None,
    ) -> None:
        self.settings = settings if settings is not None else get_settings()
        self._sources: dict[str, ImageSource] = dict(sources or {})
        self._owned: list[ImageSource] = []
        self._shared_caches: Caches | None = None
        cache_dir = self.settings.cache_dir
        cap = self.settings.cache_max_bytes or None
        local_layers = layer_cache if layer_cache is not None else SqliteLayerCache(cache_dir, cap)
        local_manifests = (
            manifest_cache if manifest_cache is not None else SqliteManifestCache(cache_dir, cap)
        )
        self.images = SqliteImageIndex(cache_dir)  # images explained here, for base matching
        self.layer_cache: LayerFactsCache = local_layers
        self.manifest_cache: ManifestCache = local_manifests
        if self.settings.redis_url is not None and layer_cache is None:
            from bot.cache.redis import make_caches

            caches = make_caches(
                self.settings, local_layers=local_layers, local_manifests=local_manifests
            )
            self.layer_cache, self.manifest_cache = caches.layers, caches.manifests
            self._shared_caches = caches
        # one resolve / analysis / layer scan per key; cancelled when nobody waits any more
        self._resolves: Shared[str, ResolvedImage] = Shared("resolve", cancel_when_abandoned=True)
        self._images: Shared[str, ImageFacts] = Shared("analyse", cancel_when_abandoned=True)
        self._layers: Shared[str, LayerScan] = Shared("scan", cancel_when_abandoned=True)
        self._slots: asyncio.Semaphore | None = None

    # ----------------------------------------------------------------- sources

    def source(self, name: Literal["registry", "docker"]) -> ImageSource:
        found = self._sources.get(name)
        if found is None:
            found = self._make_source(name)
            self._sources[name] = found
            self._owned.append(found)
        return found

    def _make_source(self, name: Literal["registry", "docker"]) -> ImageSource:
        settings = self.settings
        if name == "docker":
            from bot.image.docker_source import DockerSource

            return cast("ImageSource", DockerSource(settings))
        from bot.image.registry import RegistrySource
        from bot.netguard import check_url, guarded_connector

        def guard(url: str) -> None:
            check_url(url, settings)

        return RegistrySource.from_settings(
            settings,
            cache=self.manifest_cache,
            url_guard=guard,
            connector_factory=lambda: guarded_connector(settings),
        )

    async def _resolve(
        self, reference: str, source: SourceChoice, platform: Platform
    ) -> ResolvedImage:
        if source in ("auto", "docker"):
            report_stage(f"asking the Docker Engine for {reference}")
        from bot.image.reference import is_full_image_id, looks_like_image_id, parse_reference

        if source == "auto":
            try:
                local = await self.source("docker").resolve(reference, platform)
            except (ImageNotFound, Unreachable) as exc:
                if is_full_image_id(reference):
                    raise ImageNotFound(
                        f"image ID {reference[:80]} is not in the local Docker Engine ({exc}); "
                        "registries know images by name: use repository:tag"
                    ) from None
                log.debug("engine does not have %s (%s); trying the registry", reference, exc)
            else:  # the same image from a registry is faster to read (see bot.image.auto)
                from bot.image.auto import registry_copy

                wanted = None if looks_like_image_id(reference) else parse_reference(reference)
                copy = await registry_copy(
                    local, self.source("registry"), self.settings, platform, wanted
                )
                return copy if copy is not None else local
            source = "registry"
            if looks_like_image_id(reference):  # a short hex ID is also a valid name
                reference = str(parse_reference(reference))
        if source == "registry":
            from bot.netguard import check_registry_allowed

            domain = parse_reference(reference).domain
            check_registry_allowed(domain, self.settings)
            report_stage(f"looking up {reference} in the registry {domain}")
        return await self.source(source).resolve(reference, platform)

    # ----------------------------------------------------------------- layers

    async def scan(
        self, blob: LayerBlob, limits: ScanLimits | None = None, image: str = ""
    ) -> LayerScan:
        """The scan of one layer: from the cache, or streamed once (shared by callers)."""
        cached = await self._cached(blob)
        if cached is not None:
            return cached
        return await self._layers.run(blob.digest, lambda: self._scan_fresh(blob, limits, image))

    async def _cached(self, blob: LayerBlob) -> LayerScan | None:
        for key in dict.fromkeys(k for k in (blob.digest, blob.diff_id) if k):
            doc = await self.layer_cache.get(key)
            scan = LayerScan.from_dict(doc) if doc is not None else None
            if scan is not None:
                count_cache("layer", True)
                return scan
        count_cache("layer", False)
        return None

    async def _scan_fresh(
        self, blob: LayerBlob, limits: ScanLimits | None, image: str
    ) -> LayerScan:
        if self._slots is None:
            self._slots = asyncio.Semaphore(MAX_PARALLEL_LAYERS)
        # With Redis, replicas take a shared lock per layer, so one of them downloads it
        # and the others read its result from the shared cache.
        async with self._layer_lock(blob.digest):
            cached = await self._cached(blob)  # another process may have just stored it
            if cached is not None:
                return cached
            # The engine exports an image as one stream, in its own order: every layer of it
            # is read at once (only one streams at a time), else a layer that arrives while
            # the slots wait for later ones is spooled to disk and read twice.
            slots = self._slots if blob.open_blocking is None else contextlib.nullcontext()
            async with slots:
                size = f" ({human(blob.size)})" if blob.size else ""
                of = f" of {image}" if image else ""
                report_stage(f"reading layer {blob.digest[:19]}{size}{of}")
                scan = await scan_layer(blob, self.settings.cache_dir / "tmp", limits)
            doc = scan.to_dict()
            for key in dict.fromkeys(k for k in (blob.digest, blob.diff_id) if k):
                await self.layer_cache.put(key, doc)
        return scan

    def _layer_lock(self, digest: str) -> contextlib.AbstractAsyncContextManager[object]:
        if self._shared_caches is None:
            return contextlib.nullcontext()
        from bot.cache.redis import layer_key

        return self._shared_caches.flight.lock(layer_key(digest))

    async def _analyse(
        self, resolved: ResolvedImage, progress: ProgressCallback | None = None
    ) -> ImageFacts:
        s = self.settings
        limits = ScanLimits(  # one budget shared by every layer of this explanation
            max_layer_uncompressed=s.max_layer_uncompressed_bytes,
            unpacked=ByteBudget(s.max_uncompressed_bytes, "unpacked"),
            compressed=ByteBudget(s.max_compressed_bytes, "compressed"),
        )
        total, done, read = len(resolved.layers), 0, 0

        def report() -> None:
            if progress is not None:
                progress(ExplainProgress(resolved.reference, "reading layers", done, total, read))

        async def one(index: int, blob: LayerBlob) -> LayerScan:
            nonlocal done, read
            try:
                scan = await self.scan(blob, limits, resolved.reference)
            except ContentError as exc:
                # Name the layer as `docker history` / the manifest would: index and digest.
                raise ContentError(f"layer {index + 1} of {total} ({blob.digest}): {exc}") from None
            done, read = done + 1, read + (blob.size or 0)
            report()
            return scan

        report()
        scans = await asyncio.gather(
            *(one(index, blob) for index, blob in enumerate(resolved.layers))
        )
        facts = image_facts(resolved, list(scans))
        diff_ids = _diff_ids(resolved)
        if diff_ids:
            bases = [
                seen
                for seen in await self.images.bases(diff_ids)
                if seen.reference != resolved.reference
            ]
            facts.base_match = base_match(bases, len(diff_ids))
            await self.images.record(resolved.reference, resolved.digest or "", diff_ids)
        return finish(facts)

    # ----------------------------------------------------------------- public API

    async def facts(
        self,
        reference: str,
        *,
        source: SourceChoice = "auto",
        platform: Platform | None = None,
        progress: ProgressCallback | None = None,
    ) -> ImageFacts:
        return (await self.inspect(reference, source=source, platform=platform, progress=progress))[
            1
        ]

    async def inspect(
        self,
        reference: str,
        *,
        source: SourceChoice = "auto",
        platform: Platform | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[ResolvedImage, ImageFacts]:
        """The resolved image (manifest, config, layer blobs) and its facts; the layer scans
        are in the layer cache afterwards (``scan(blob)`` returns them without a download).
        ``progress`` is called at each stage (lookup, each layer read); when the same
        image is being analysed for another caller, only that caller sees the layers."""
        if source not in ("auto", "registry", "docker"):
            raise InvalidInput(f"unknown image source {source!r}: use auto, registry or docker")
        from bot.image.reference import from_paste, looks_like_image_id, parse_reference

        text = from_paste(reference)  # Hub URLs, chat links, pasted `docker pull …`
        if not text:
            raise InvalidInput("Which image? e.g. `explain python:3.12-slim`")
        if source != "registry" and looks_like_image_id(text):
            name = text  # an image ID: the engine finds it as `docker inspect` does
        else:
            name = str(parse_reference(text))  # InvalidReference: one clear line
        wanted = platform if platform is not None else default_platform()

        async def work() -> tuple[ResolvedImage, ImageFacts]:
            if progress is not None:
                progress(ExplainProgress(name, "looking up the image"))
            resolved = await self._resolves.run(
                f"{source}|{name}|{wanted}", lambda: self._resolve(name, source, wanted)
            )
            key = "|".join(
                [
                    resolved.source,
                    resolved.digest or resolved.reference,
                    str(resolved.platform),
                    resolved.reference,
                ]
            )
            return resolved, await self._images.run(key, lambda: self._analyse(resolved, progress))

        # TimedOut names the stage that was slow (see bot.limits.report_stage).
        resolved, shared = await with_timeout(
            work(), self.settings.explain_timeout, f"explaining {name}"
        )
        log.info("explained %s (%s, %s)", name, resolved.source, resolved.digest)
        result = copy.deepcopy(shared)  # callers may mutate theirs
        return resolved, result

    async def explain(
        self,
        reference: str,
        *,
        source: SourceChoice = "auto",
        platform: Platform | None = None,
        progress: ProgressCallback | None = None,
    ) -> Reply:
        facts = await self.facts(reference, source=source, platform=platform, progress=progress)
        return render(facts)

    async def aclose(self) -> None:
        for owned in self._owned:
            closer = getattr(owned, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        self._owned.clear()
        if self._shared_caches is not None:
            with contextlib.suppress(Exception):
                await self._shared_caches.aclose()


__all__ = ["Explainer", "default_platform"]
