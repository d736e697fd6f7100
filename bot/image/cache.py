"""Local persistent caches in one SQLite file under ``Settings.cache_dir``.

- ``SqliteLayerCache``: layer facts (``LayerScan.to_dict()``) by layer digest. A layer's
  bytes never change for a digest, so entries never expire; a second image sharing a base
  layer reads its index from here instead of downloading the layer.
- ``SqliteManifestCache``: the registry client's ``ManifestCache`` (``get``/``set`` with a
  TTL: content-addressed keys forever, tags briefly).
- ``SqliteImageIndex``: images explained before, by their layer chain, to name the base
  of an image that has no base-image label.

The database runs in WAL mode with a busy timeout, so several dockwise processes can
share a cache dir; every write is one transaction (``INSERT OR REPLACE``). Each call opens
its own short-lived connection in a worker thread: nothing blocks the event loop and no
connection crosses threads. A damaged or unreadable cache is a miss, never an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

DB_NAME = "dockwise-cache.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS layer_facts (
    digest TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    stored REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS manifests (
    key TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    body BLOB NOT NULL,
    expires REAL
);
CREATE TABLE IF NOT EXISTS seen_images (
    reference TEXT NOT NULL,
    digest TEXT NOT NULL,
    chain TEXT NOT NULL,
    layers INTEGER NOT NULL,
    seen REAL NOT NULL,
    PRIMARY KEY (reference, digest)
);
CREATE INDEX IF NOT EXISTS seen_images_chain ON seen_images (chain);
"""
MAX_BASE_CANDIDATES = 20


class LayerFactsCache(Protocol):
    """Layer facts (``LayerScan.to_dict()``) by layer digest; bot.image.redis_cache has
    Redis-backed ones with the same interface."""

    async def get(self, digest: str) -> dict[str, Any] | None: ...

    async def put(self, digest: str, facts: dict[str, Any]) -> None: ...


class _Db:
    def __init__(self, path: Path, busy_timeout: float = 30.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._ready = False

    def connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        if not self._ready:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            self._ready = True
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def run(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            write = not sql.lstrip().upper().startswith("SELECT")
            if write:
                conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(sql, params).fetchall()
            if write:
                conn.execute("COMMIT")
            return rows
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    async def call(self, sql: str, *params: Any) -> list[tuple[Any, ...]] | None:
        try:
            return await asyncio.to_thread(self.run, sql, params)
        except (sqlite3.Error, OSError) as exc:
            log.warning("cache %s unavailable: %s", self.path.name, exc)
            return None


class SqliteLayerCache:
    """Layer facts by layer digest (``get``/``put`` of JSON-able dicts)."""

    def __init__(self, cache_dir: Path) -> None:
        self._db = _Db(Path(cache_dir) / DB_NAME)

    async def get(self, digest: str) -> dict[str, Any] | None:
        rows = await self._db.call("SELECT data FROM layer_facts WHERE digest = ?", digest)
        if not rows:
            return None
        try:
            doc = json.loads(zlib.decompress(rows[0][0]))
        except (ValueError, zlib.error, TypeError):
            return None
        return doc if isinstance(doc, dict) else None

    async def put(self, digest: str, facts: dict[str, Any]) -> None:
        data = zlib.compress(json.dumps(facts, separators=(",", ":")).encode(), 6)
        await self._db.call(
            "INSERT OR REPLACE INTO layer_facts (digest, data, stored) VALUES (?, ?, ?)",
            digest,
            data,
            time.time(),
        )


class SqliteManifestCache:
    """``bot.image.registry.ManifestCache`` on disk. ``ttl`` None keeps an entry forever
    (content-addressed keys); otherwise it expires after ``ttl`` seconds (wall clock, so
    every process sharing the file agrees)."""

    def __init__(self, cache_dir: Path) -> None:
        self._db = _Db(Path(cache_dir) / DB_NAME)

    async def get(self, key: str) -> tuple[str, bytes] | None:
        rows = await self._db.call(
            "SELECT media_type, body, expires FROM manifests WHERE key = ?", key
        )
        if not rows:
            return None
        media_type, body, expires = rows[0]
        if expires is not None and time.time() >= float(expires):
            return None
        return str(media_type), bytes(body)

    async def set(self, key: str, media_type: str, body: bytes, ttl: float | None) -> None:
        expires = None if ttl is None else time.time() + ttl
        await self._db.call(
            "INSERT OR REPLACE INTO manifests (key, media_type, body, expires) VALUES (?, ?, ?, ?)",
            key,
            media_type,
            body,
            expires,
        )


def layer_chain(diff_ids: list[str]) -> str:
    """One key for a stack of layers (its diff_ids, bottom first): equal keys, equal
    filesystems."""
    return hashlib.sha256("\n".join(diff_ids).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SeenImage:
    reference: str
    digest: str
    layers: int


class SqliteImageIndex:
    """Images dockwise has explained, by the chain of their layers' diff_ids, to name the
    base of an image without a base-image label (as docker scout matches layers): every
    prefix of the image's diff_ids is looked up, the longest one that is a whole image
    seen before is its base."""

    def __init__(self, cache_dir: Path) -> None:
        self._db = _Db(Path(cache_dir) / DB_NAME)

    async def record(self, reference: str, digest: str, diff_ids: list[str]) -> None:
        if not diff_ids:
            return
        await self._db.call(
            "INSERT OR REPLACE INTO seen_images (reference, digest, chain, layers, seen) "
            "VALUES (?, ?, ?, ?, ?)",
            reference,
            digest,
            layer_chain(diff_ids),
            len(diff_ids),
            time.time(),
        )

    async def bases(self, diff_ids: list[str]) -> list[SeenImage]:
        """The images seen before whose layers are the longest proper prefix of
        ``diff_ids`` (several when tags share the same layers), most recently seen first."""
        for length in range(len(diff_ids) - 1, 0, -1):
            rows = await self._db.call(
                "SELECT reference, digest, layers FROM seen_images WHERE chain = ? "
                "ORDER BY seen DESC LIMIT ?",
                layer_chain(diff_ids[:length]),
                MAX_BASE_CANDIDATES,
            )
            if rows:
                return [SeenImage(str(r), str(d), int(n)) for r, d, n in rows]
        return []


__all__ = [
    "DB_NAME",
    "LayerFactsCache",
    "SeenImage",
    "SqliteImageIndex",
    "SqliteLayerCache",
    "SqliteManifestCache",
    "layer_chain",
]
