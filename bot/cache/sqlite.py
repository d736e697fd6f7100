"""Local persistent caches in one SQLite file under ``Settings.cache_dir``.

- ``SqliteLayerCache``: layer facts (``LayerScan.to_dict()``) by layer digest. A layer's
  bytes never change for a digest, so entries never expire; a second image sharing a base
  layer reads its index from here instead of downloading the layer.
- ``SqliteManifestCache``: the registry client's ``ManifestCache`` (``get``/``set`` with a
  TTL: content-addressed keys forever, tags briefly).
- ``SqliteImageIndex``: images explained before, by their layer chain, to name the base
  of an image that has no base-image label.

With ``max_bytes`` (``DOCKWISE_CACHE_MAX_BYTES``) the entries of both tables together stay
under that many bytes (keys and stored values): a write that goes over evicts expired
tags, then the least recently used entries until 90% of the cap is left, in the same
transaction; an entry bigger than the whole cap is not stored. "Used" is the last read or
write, recorded at most once a ``touch_after`` (60 s) per entry, so hot entries do not
turn every read into a write. Freed pages go back
to the file system (``auto_vacuum=INCREMENTAL`` on new files). Files from older versions
gain the size and use columns on first open.

The database runs in WAL mode with a busy timeout, so several dockwise processes can
share a cache dir; every write is one transaction (``INSERT OR REPLACE``). Each call opens
its own short-lived connection in a worker thread: nothing blocks the event loop and no
connection crosses threads. An unreadable cache is a miss, never an error; a damaged file
(not a database, or corrupt: SQLITE_NOTADB / SQLITE_CORRUPT) is deleted and started afresh,
with one warning, and the call is retried on the new file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.cache.base import LayerFactsCache

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
#: Columns added for the size cap (older files get them on first open).
_LRU_COLUMNS = (("size", "INTEGER NOT NULL DEFAULT 0"), ("used", "REAL NOT NULL DEFAULT 0"))
_SIZES = {
    "layer_facts": "length(digest) + length(data)",
    "manifests": "length(key) + length(media_type) + length(body)",
}
_KEYS = {"layer_facts": "digest", "manifests": "key"}
#: Eviction frees down to this share of the cap, so not every write evicts.
EVICT_TO = 0.9
TOUCH_AFTER = 60.0
#: One rebuild of a damaged file at a time in this process.
_REBUILD_LOCK = threading.Lock()


def _damaged(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the file is not a database or is corrupt (SQLITE_NOTADB,
    SQLITE_CORRUPT and its extended codes)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _tables_gone(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is a missing table (the file was rebuilt under this process)."""
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("no such table")


class _Db:
    def __init__(
        self, path: Path, busy_timeout: float = 30.0, max_bytes: int | None = None
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.max_bytes = max_bytes
        self._ready = False

    def connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            if not self._ready:
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # new files only
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                self._migrate(conn)
                self._ready = True
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        for table, size in _SIZES.items():
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            missing = [(name, decl) for name, decl in _LRU_COLUMNS if name not in have]
            if not missing:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                for name, decl in missing:
                    if name not in have:  # another process may have just added it
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
                conn.execute(
                    f"UPDATE {table} SET size = {size}, used = ? WHERE size = 0",  # noqa: S608
                    (time.time(),),
                )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        for table in _SIZES:
            conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_used ON {table} (used)")

    def fits(self, size: int) -> bool:
        """Whether an entry of ``size`` bytes can be stored under the cap at all (one that
        cannot would only evict every other entry, then itself)."""
        return self.max_bytes is None or size <= self.max_bytes

    def evict(self, conn: sqlite3.Connection) -> int:
        """Inside a write transaction: drop expired tags, then least recently used entries
        while the entries exceed ``max_bytes`` (down to ``EVICT_TO`` of it). Returns how
        many entries went."""
        if self.max_bytes is None:
            return 0
        gone = conn.execute(
            "DELETE FROM manifests WHERE expires IS NOT NULL AND expires <= ?", (time.time(),)
        ).rowcount
        (total,) = conn.execute(
            "SELECT (SELECT COALESCE(SUM(size), 0) FROM layer_facts)"
            " + (SELECT COALESCE(SUM(size), 0) FROM manifests)"
        ).fetchone()
        if total <= self.max_bytes:
            return gone
        goal = self.max_bytes * EVICT_TO
        victims = conn.execute(
            "SELECT 'layer_facts', digest, size, used FROM layer_facts"
            " UNION ALL SELECT 'manifests', key, size, used FROM manifests"
            " ORDER BY used ASC"
        ).fetchall()
        for table, key, size, _used in victims:
            if total <= goal:
                break
            conn.execute(f"DELETE FROM {table} WHERE {_KEYS[table]} = ?", (key,))  # noqa: S608
            total -= size
            gone += 1
        return gone

    def run(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Run one statement (a write in its own transaction, evicting over the cap). A
        damaged file is replaced by an empty one and the statement run again; so is a
        statement on a file whose tables went with such a rebuild elsewhere. Raises
        ``sqlite3.Error`` / ``OSError`` otherwise."""
        try:
            return self._run(sql, params)
        except sqlite3.DatabaseError as exc:
            if _damaged(exc):
                self._rebuild(exc)
            elif not _tables_gone(exc):
                raise
            self._ready = False
            return self._run(sql, params)

    def _rebuild(self, exc: sqlite3.Error) -> None:
        """Delete the damaged file (and its WAL), unless it was rebuilt meanwhile."""
        with _REBUILD_LOCK:
            if not self._still_damaged():
                return
            log.warning("cache %s was damaged (%s); starting an empty one", self.path.name, exc)
            for suffix in ("-wal", "-shm", "-journal", ""):
                with contextlib.suppress(FileNotFoundError):
                    self.path.with_name(self.path.name + suffix).unlink()

    def _still_damaged(self) -> bool:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout)
            try:
                row = conn.execute("PRAGMA quick_check(1)").fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            return _damaged(exc)
        except (sqlite3.Error, OSError):
            return False
        return row is None or row[0] != "ok"

    def _run(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            write = not sql.lstrip().upper().startswith("SELECT")
            if write:
                conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(sql, params).fetchall()
            if write:
                if self.evict(conn):
                    conn.execute("COMMIT")
                    conn.execute("PRAGMA incremental_vacuum")
                    return rows
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
    """Layer facts by layer digest (``get``/``put`` of JSON-able dicts); ``max_bytes``
    caps the whole cache file's entries (see the module docstring)."""

    def __init__(
        self, cache_dir: Path, max_bytes: int | None = None, touch_after: float = TOUCH_AFTER
    ) -> None:
        self._db = _Db(Path(cache_dir) / DB_NAME, max_bytes=max_bytes)
        self.touch_after = touch_after

    async def get(self, digest: str) -> dict[str, Any] | None:
        rows = await self._db.call("SELECT data, used FROM layer_facts WHERE digest = ?", digest)
        if not rows:
            return None
        await _touch(self._db, "layer_facts", digest, rows[0][1], self.touch_after)
        try:
            doc = json.loads(zlib.decompress(rows[0][0]))
        except (ValueError, zlib.error, TypeError):
            return None
        return doc if isinstance(doc, dict) else None

    async def put(self, digest: str, facts: dict[str, Any]) -> None:
        data = zlib.compress(json.dumps(facts, separators=(",", ":")).encode(), 6)
        size = len(digest.encode()) + len(data)
        if not self._db.fits(size):
            await self._db.call("DELETE FROM layer_facts WHERE digest = ?", digest)
            return
        now = time.time()
        await self._db.call(
            "INSERT OR REPLACE INTO layer_facts (digest, data, stored, size, used)"
            " VALUES (?, ?, ?, ?, ?)",
            digest,
            data,
            now,
            size,
            now,
        )


class SqliteManifestCache:
    """``bot.cache.base.ManifestCache`` on disk. ``ttl`` None keeps an entry forever
    (content-addressed keys); otherwise it expires after ``ttl`` seconds (wall clock, so
    every process sharing the file agrees)."""

    def __init__(
        self, cache_dir: Path, max_bytes: int | None = None, touch_after: float = TOUCH_AFTER
    ) -> None:
        self._db = _Db(Path(cache_dir) / DB_NAME, max_bytes=max_bytes)
        self.touch_after = touch_after

    async def get(self, key: str) -> tuple[str, bytes] | None:
        rows = await self._db.call(
            "SELECT media_type, body, expires, used FROM manifests WHERE key = ?", key
        )
        if not rows:
            return None
        media_type, body, expires, used = rows[0]
        if expires is not None and time.time() >= float(expires):
            return None
        await _touch(self._db, "manifests", key, used, self.touch_after)
        return str(media_type), bytes(body)

    async def set(self, key: str, media_type: str, body: bytes, ttl: float | None) -> None:
        size = len(key.encode()) + len(media_type.encode()) + len(body)
        if not self._db.fits(size):  # and no older value for the key stays either
            await self._db.call("DELETE FROM manifests WHERE key = ?", key)
            return
        now = time.time()
        expires = None if ttl is None else now + ttl
        await self._db.call(
            "INSERT OR REPLACE INTO manifests (key, media_type, body, expires, size, used)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            key,
            media_type,
            body,
            expires,
            size,
            now,
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


async def _touch(db: _Db, table: str, key: str, used: Any, touch_after: float) -> None:
    """Record a read for LRU, at most once per ``touch_after`` seconds per entry."""
    if db.max_bytes is None:
        return
    now = time.time()
    if now - float(used or 0) >= touch_after:
        await db.call(f"UPDATE {table} SET used = ? WHERE {_KEYS[table]} = ?", now, key)  # noqa: S608


__all__ = [
    "DB_NAME",
    "LayerFactsCache",
    "SeenImage",
    "SqliteImageIndex",
    "SqliteLayerCache",
    "SqliteManifestCache",
    "layer_chain",
]
