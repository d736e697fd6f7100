"""The cache interfaces every store of ``bot.cache`` implements (structural protocols).

- ``ManifestCache``: registry manifests and image configs by key, each with a TTL. Keys
  are ``manifest:NAME@DIGEST`` and ``blob:NAME@DIGEST`` (``ttl`` None: content-addressed,
  kept "forever", i.e. until the store's own bound evicts them) or ``manifest:NAME:TAG``
  (``ttl`` seconds: tags move). NAME is e.g. docker.io/library/x. Implemented by
  ``bot.cache.memory.MemoryManifestCache``, ``bot.cache.sqlite.SqliteManifestCache`` and
  ``bot.cache.redis.RedisManifestCache`` / ``FallbackManifestCache``.
- ``LayerFactsCache``: layer facts (``LayerScan.to_dict()``) by layer digest, never
  expiring by content (a digest's bytes never change). Implemented by
  ``bot.cache.sqlite.SqliteLayerCache``, ``bot.cache.redis.RedisLayerFactsCache`` /
  ``FallbackLayerFactsCache`` and ``MemoryLayerFactsCache``.

Stores never raise for their own trouble (a damaged file, Redis down): that reads as a
miss or a skipped write.
"""

from __future__ import annotations

from typing import Any, Protocol


class ManifestCache(Protocol):
    """Where fetched manifests and configs may be kept (see the module docstring for the
    keys). ``get`` returns ``(media_type, body)`` or None; ``set`` stores for ``ttl``
    seconds (None: no expiry of its own)."""

    async def get(self, key: str) -> tuple[str, bytes] | None: ...

    async def set(self, key: str, media_type: str, body: bytes, ttl: float | None) -> None: ...


class LayerFactsCache(Protocol):
    """Layer facts by layer digest (``sha256:...``): ``get`` returns the stored dict or
    None, ``put`` stores it."""

    async def get(self, digest: str) -> dict[str, Any] | None: ...

    async def put(self, digest: str, facts: dict[str, Any]) -> None: ...


__all__ = ["LayerFactsCache", "ManifestCache"]
