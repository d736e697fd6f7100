"""Process-local caches: for tests, the CLI and as the fallback of last resort.

``MemoryManifestCache`` is a ``bot.cache.base.ManifestCache`` in a dict (entries expire by
their TTL on read; no size bound, so not for long-running servers: they use
``bot.cache.sqlite`` or ``bot.cache.redis``).
"""

from __future__ import annotations

import time


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


__all__ = ["MemoryManifestCache"]
