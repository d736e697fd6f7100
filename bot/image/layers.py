"""Read one layer in a single streaming pass: its file index and its few telling files.

``scan_layer(blob, tmp_dir)`` pulls the blob's compressed chunks from the source's async
iterator, decompresses them incrementally (gzip via ``isal``, zstd via ``zstandard``, or
none) and walks the tar stream with ``tarfile`` (``r:`` mode over a forward-only reader
that skips unread member data chunk by chunk: ``bot.image.streams.Forward``), all in a
worker thread so the event loop stays free. The thread pulls the next chunk from the loop
while it works on the current one (one chunk of read-ahead), so the network and the CPU
overlap; a source that offers ``LayerBlob.open_blocking`` (the engine) feeds the worker
thread directly.

Nothing is ever extracted to a path taken from the archive. The result, ``LayerScan``, is:

- the index (normalised path -> kind, size, link target), whiteouts and opaque dirs, which
  the overlay merge and the wasted-space calculation need;
- the parsed content of the interesting files (os-release, dpkg/apk/rpm databases), each read
  into memory under a per-file cap (rpm's sqlite db goes to a random temp file under the
  cache dir, is counted with sqlite3 and deleted);
- the number of bytes in the uncompressed tar stream. The stream is always read to its end:
  the wasted-space index needs every header anyway, and the registry source verifies the
  blob digest only once the whole blob has been read.

A ``LayerScan`` depends only on the layer bytes, so it is cached by layer digest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import os
import tarfile
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from isal import isal_zlib

from bot.errors import ContentError
from bot.image import detectors
from bot.image.detectors.base import SNIFF_BYTES, Detector, Value
from bot.image.source import Compression, LayerBlob
from bot.image.streams import Forward

SCAN_VERSION = 2  # bump when LayerScan's meaning changes: old cache rows are ignored
OUT_CHUNK = 256 * 1024
_GZIP_ERROR: type[Exception] = getattr(isal_zlib, "error")  # noqa: B009
COPY_CHUNK = 1024 * 1024
MIB = 1024 * 1024
GIB = 1024 * MIB
# Caps on what one layer may make us read (hostile images). Per explanation budgets are
# ``ByteBudget`` objects shared by the scans of one image (see ``ScanLimits``).
MAX_LAYER_UNCOMPRESSED = 8 * GIB  # bytes of tar stream one layer may unpack to
MAX_TAR_HEADER = 1 * MIB  # a PAX extended header or GNU long name/link record
MAX_READS_PAST_END = 16  # reads after the stream ended before it counts as truncated
PULL_BATCH = 1024 * 1024  # bytes handed from the loop to a scan thread per round trip
MAX_SNIFFED = 64  # files per layer captured because their content looked interesting
MIN_SNIFF_SIZE = 16
# Names that are never a database or os-release copy: not worth a look at their bytes.
NOT_SNIFFED = (
    ".py", ".pyc", ".so", ".a", ".o", ".js", ".mjs", ".ts", ".map", ".h", ".hpp", ".c",
    ".go", ".rb", ".pm", ".pl", ".php", ".java", ".class", ".jar", ".html", ".css", ".svg",
    ".png", ".jpg", ".gif", ".ico", ".gz", ".xz", ".zst", ".bz2", ".zip", ".mo", ".ko",
)  # fmt: skip

Kind = Literal["f", "d", "l", "h", "o"]  # file, dir, symlink, hard link, other
CapturedKind = str  # a detector name (bot.image.detectors)


@dataclass(frozen=True, slots=True)
class Entry:
    kind: Kind
    size: int = 0
    link: str | None = None  # symlink target as written (may be absolute); hard link: path


@dataclass(frozen=True, slots=True)
class Captured:
    """What an interesting file said. ``kind`` names the detector; ``value`` its parser's
    result (os-release fields, a first line, a package count); None when unreadable or too
    big."""

    kind: CapturedKind
    value: Value


@dataclass(slots=True)
class LayerScan:
    digest: str
    entries: dict[str, Entry] = field(default_factory=dict)
    whiteouts: list[str] = field(default_factory=list)  # paths this layer deletes
    opaque: list[str] = field(default_factory=list)  # dirs whose lower contents it hides
    files: dict[str, Captured] = field(default_factory=dict)
    uncompressed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what the layer-facts caches store)."""
        return {
            "v": SCAN_VERSION,
            "digest": self.digest,
            "entries": {p: [e.kind, e.size, e.link] for p, e in self.entries.items()},
            "whiteouts": self.whiteouts,
            "opaque": self.opaque,
            "files": {p: [c.kind, c.value] for p, c in self.files.items()},
            "uncompressed": self.uncompressed,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> LayerScan | None:
        """None for entries written by another version (or damaged): they are re-scanned."""
        try:
            if doc.get("v") != SCAN_VERSION:
                return None
            return cls(
                digest=str(doc["digest"]),
                entries={p: Entry(k, int(s), lk) for p, (k, s, lk) in doc["entries"].items()},
                whiteouts=[str(p) for p in doc["whiteouts"]],
                opaque=[str(p) for p in doc["opaque"]],
                files={p: Captured(k, v) for p, (k, v) in doc["files"].items()},
                uncompressed=int(doc["uncompressed"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def normalise(name: str) -> str | None:
    """A tar member name as a path relative to the image root; None for the root itself
    and for names that try to climb out of it (``..``)."""
    parts = []
    for part in name.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            return None
        parts.append(part)
    return "/".join(parts) or None


def interest(path: str) -> tuple[CapturedKind, int] | None:
    """Which detector wants an interesting path, and its size cap in bytes."""
    detector = detectors.wanted(path)
    return (detector.name, detector.cap) if detector is not None else None


# --------------------------------------------------------------------------- byte plumbing


class _Pull:
    """Runs in the worker thread: fetches chunks from the async iterator on the loop,
    one chunk ahead of the consumer."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        stream: AsyncIterator[bytes],
        budget: ByteBudget | None = None,
    ) -> None:
        self._budget = budget
        self._loop = loop
        self._stream = stream
        self._next: concurrent.futures.Future[bytes | None] | None = None
        self.stop = threading.Event()
        self.compressed = 0

    async def _one(self) -> bytes | None:
        """The next ``PULL_BATCH`` bytes or so (one chunk or several joined): each call is
        a round trip between the worker thread and the loop, so it carries more than one
        network chunk (a registry blob arrives in 256 KiB pieces)."""
        parts: list[bytes] = []
        size = 0
        while size < PULL_BATCH:
            try:
                chunk = await anext(self._stream)
            except StopAsyncIteration:
                break
            parts.append(chunk)
            size += len(chunk)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _schedule(self) -> None:
        self._next = asyncio.run_coroutine_threadsafe(self._one(), self._loop)

    def __call__(self) -> bytes:
        if self.stop.is_set():
            raise ContentError("layer read was cancelled")
        if self._next is None:
            self._schedule()
        assert self._next is not None
        chunk = self._next.result()
        if chunk is None:
            self._next = None
            return b""
        self._schedule()
        self.compressed += len(chunk)
        if self._budget is not None:
            self._budget.take(len(chunk))
        return bytes(chunk)

    async def aclose(self) -> None:
        self.stop.set()
        pending = self._next
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wrap_future(pending)
        closer = getattr(self._stream, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()


class _Raw(io.RawIOBase):
    """Compressed bytes as a file: ``read(n)`` returns at most n bytes, b"" at the end.
    A chunk is consumed by moving an offset (one copy per read, not one per leftover)."""

    def __init__(self, pull: Callable[[], bytes]) -> None:
        self._pull = pull
        self._buf = b""
        self._off = 0
        self._eof = False

    def readable(self) -> bool:
        return True

    def peek(self, size: int) -> bytes:
        """The next ``size`` bytes (fewer at the end), left to be read."""
        while len(self._buf) - self._off < size and not self._eof:
            more = self._pull()
            self._eof = not more
            self._buf = self._buf[self._off :] + more
            self._off = 0
        return self._buf[self._off : self._off + size]

    def read(self, size: int | None = -1) -> bytes:
        while self._off >= len(self._buf) and not self._eof:
            self._buf, self._off = self._pull(), 0
            self._eof = not self._buf
        start = self._off
        if size is None or size < 0 or start + size >= len(self._buf):
            self._off = len(self._buf)
            return self._buf[start:] if start else self._buf
        self._off = start + size
        return self._buf[start : start + size]

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _Gunzip(io.RawIOBase):
    """Incremental gzip (multi-member) with bounded output per read, using isal."""

    def __init__(self, raw: _Raw) -> None:
        self._raw = raw
        self._obj = isal_zlib.decompressobj(wbits=31)
        self._tail = b""
        self._done = False
        self._started = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = OUT_CHUNK if size is None or size < 0 else max(size, 1)
        while not self._done:
            data = self._tail or self._raw.read(OUT_CHUNK)
            self._tail = b""
            if not data:
                if self._started and not self._obj.eof:
                    raise ContentError("layer gzip stream is truncated")
                self._done = True
                break
            self._started = True
            try:
                out: bytes = self._obj.decompress(data, want)
            except _GZIP_ERROR as exc:
                raise ContentError(f"layer is not valid gzip ({exc})") from None
            self._tail = self._obj.unconsumed_tail
            if self._obj.eof:
                rest = self._obj.unused_data
                self._obj = isal_zlib.decompressobj(wbits=31)
                self._started = False
                # Another member follows, or trailing padding we ignore.
                self._tail = rest if rest.startswith(b"\x1f\x8b") else b""
            if out:
                return out
        return b""

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _mib(n: int) -> str:
    return f"{n / GIB:g} GiB" if n >= GIB and n % GIB == 0 else f"{n / MIB:g} MiB"


class ByteBudget:
    """An allowance of bytes shared by the layer scans of one explanation (thread-safe:
    scans run in worker threads). ``what`` names the bytes, e.g. "unpacked"."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.used = 0
        self._lock = threading.Lock()

    def take(self, count: int) -> None:
        with self._lock:
            self.used += count
            over = self.used > self.limit
        if over:
            raise ContentError(
                f"image is too large to explain: more than {_mib(self.limit)} {self.what} in total"
            )


@dataclass(frozen=True, slots=True)
class ScanLimits:
    """How much one layer scan may read. ``unpacked`` / ``compressed`` budgets are shared by
    all layers of one explanation (None: no total limit)."""

    max_layer_uncompressed: int = MAX_LAYER_UNCOMPRESSED
    max_header: int = MAX_TAR_HEADER
    unpacked: ByteBudget | None = None
    compressed: ByteBudget | None = None


class _Counted:
    """The uncompressed tar stream: counts bytes, enforces the per-layer and per-image caps
    (a gzip bomb stops as soon as it passes them) and notices a tar reader that keeps asking
    for bytes after the end (a member claiming more data than the stream holds)."""

    def __init__(self, inner: Any, digest: str = "", limits: ScanLimits | None = None) -> None:
        self._inner = inner
        self._digest = digest
        self._limits = limits if limits is not None else ScanLimits()
        self.count = 0
        self.past_end = 0

    def read(self, size: int = -1) -> bytes:
        if self.past_end > MAX_READS_PAST_END:
            raise ContentError(
                f"layer {self._digest[:19]} is truncated: a tar member claims more bytes "
                "than the layer holds"
            )
        data: bytes = self._inner.read(size)
        if not data and size != 0:
            self.past_end += 1
            return data
        self.count += len(data)
        limit = self._limits.max_layer_uncompressed
        if self.count > limit:
            raise ContentError(
                f"layer {self._digest[:19]} unpacks to more than {_mib(limit)} "
                "(the per-layer limit)"
            )
        if self._limits.unpacked is not None:
            self._limits.unpacked.take(len(data))
        return data


MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
)


def sniff_compression(head: bytes) -> str:
    """What the first bytes of a layer blob say it is, as Docker's DecompressStream reads a
    layer whatever its media type says: gzip, zstd, bzip2, xz, or "none" (plain tar)."""
    for magic, name in MAGIC:
        if head.startswith(magic):
            return name
    return "none"


def _decoder(raw: _Raw, actual: str) -> Any:
    if actual == "gzip":
        return _Gunzip(raw)
    if actual == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(
            raw,  # type: ignore[arg-type]
            read_size=OUT_CHUNK,
            read_across_frames=True,
            closefd=False,
        )
    if actual == "bzip2":
        import bz2

        return bz2.BZ2File(raw)
    if actual == "xz":
        import lzma

        return lzma.LZMAFile(raw)  # type: ignore[arg-type]
    return raw


# --------------------------------------------------------------------------- the tar walk


def _spool(head: bytes, handle: Any, tmp_dir: Path, detector: Detector, path: str) -> Value:
    """Copy the member to a private temp file, parse it there, delete it."""
    try:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{detector.name}-", dir=tmp_dir)
    except OSError:
        return None  # no usable cache dir: the value stays unknown
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(head)
            while chunk := handle.read(COPY_CHUNK):
                out.write(chunk)
        return detector.parse(Path(name), path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _capture(
    detector: Detector,
    tf: tarfile.TarFile,
    member: tarfile.TarInfo,
    tmp_dir: Path,
    path: str,
    head: bytes = b"",
    handle: Any = None,
) -> Captured:
    """Run ``detector``'s parser on the member (``head``: bytes already read from ``handle``)."""
    if not detector.read:
        return Captured(detector.name, detector.parse(b"", path))
    if member.size > detector.cap:
        return Captured(detector.name, None)
    if handle is None:
        handle = tf.extractfile(member)
        if handle is None:
            return Captured(detector.name, None)
    if detector.spool:
        return Captured(detector.name, _spool(head, handle, tmp_dir, detector, path))
    data = head + handle.read(detector.cap + 1 - len(head))
    if len(data) > detector.cap:
        return Captured(detector.name, None)
    return Captured(detector.name, detector.parse(data, path))


def _sniff(
    tf: tarfile.TarFile, member: tarfile.TarInfo, tmp_dir: Path, path: str
) -> Captured | None:
    """A file that no detector wants by name but one recognises by content (the first
    name of a hard-linked database, a database under a symlinked directory)."""
    if member.issparse():
        return None
    # Straight from the stream (tarfile skips the rest of the member on the next header):
    # an ExFileObject per file would cost more than the rest of the walk.
    handle = _MemberBytes(tf.fileobj, member.size)
    head = handle.read(SNIFF_BYTES)
    detector = detectors.sniffed(head, member.size)
    if detector is None:
        return None
    return _capture(detector, tf, member, tmp_dir, path, head, handle)


class _MemberBytes:
    """The data of the current member of a forward-only tar stream, read straight from it."""

    def __init__(self, stream: Any, size: int) -> None:
        self._stream = stream
        self._left = size

    def read(self, size: int = -1) -> bytes:
        want = self._left if size < 0 else min(size, self._left)
        if want <= 0:
            return b""
        data: bytes = self._stream.read(want)
        self._left -= len(data)
        return data


_META_TYPES = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)


def _header_class(max_header: int) -> type[tarfile.TarInfo]:
    """A TarInfo that refuses oversized PAX / GNU long-name records before tarfile reads
    them into memory."""

    class _Capped(tarfile.TarInfo):
        def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
            if self.type in _META_TYPES and self.size > max_header:
                raise ContentError(
                    f"layer has a tar header record of {self.size} bytes "
                    f"(over the {_mib(max_header)} limit)"
                )
            result: tarfile.TarInfo = super()._proc_member(archive)  # type: ignore[misc]
            return result

    return _Capped


def walk_tar(
    fileobj: Any, digest: str, tmp_dir: Path, *, limits: ScanLimits | None = None
) -> LayerScan:
    """Index one uncompressed tar stream (blocking; run it in a thread)."""
    limits = limits if limits is not None else ScanLimits()
    scan = LayerScan(digest=digest)
    sniffed = 0
    stream = Forward(fileobj.read)  # r: mode, forward only: unread member data is skipped
    with tarfile.open(
        fileobj=stream,
        mode="r:",
        tarinfo=_header_class(limits.max_header),
    ) as tf:
        for member in tf:
            if member.size > limits.max_layer_uncompressed:
                raise ContentError(
                    f"layer {digest[:19]} has a tar member claiming {member.size} bytes "
                    f"(over the {_mib(limits.max_layer_uncompressed)} per-layer limit)"
                )
            path = normalise(member.name)
            if path is None:
                continue
            parent, _, base = path.rpartition("/")
            if base.startswith(".wh."):
                if base == ".wh..wh..opq":
                    scan.opaque.append(parent)
                elif base[4:] not in ("", ".", ".."):  # ".wh..." must not delete a parent
                    scan.whiteouts.append(f"{parent}/{base[4:]}" if parent else base[4:])
                continue
            if member.isdir():
                scan.entries[path] = Entry("d")
            elif member.issym():
                scan.entries[path] = Entry("l", 0, member.linkname)
            elif member.islnk():
                target = normalise(member.linkname)
                if target is None:
                    continue
                # Same inode as ``target``: no extra bytes (dive counts it as 0 too). The
                # analysis reads facts through it (bot.image.analysis.Tree).
                scan.entries[path] = Entry("h", 0, target)
            elif member.isreg():
                scan.entries[path] = Entry("f", member.size)
                detector = detectors.wanted(path)
                if detector is not None:
                    scan.files[path] = _capture(detector, tf, member, tmp_dir, path)
                elif (
                    sniffed < MAX_SNIFFED
                    and MIN_SNIFF_SIZE <= member.size <= detectors.SNIFF_MAX
                    and not path.endswith(NOT_SNIFFED)
                ):
                    found = _sniff(tf, member, tmp_dir, path)
                    if found is not None:
                        scan.files[path] = found
                        sniffed += 1
            else:
                scan.entries[path] = Entry("o")
    # Read to the end: trailing padding counts as stream bytes, and sources verify digests
    # only once the whole blob has been read.
    while fileobj.read(COPY_CHUNK):
        pass
    return scan


def _scan_blocking(
    pull: Callable[[], bytes],
    compression: Compression,
    digest: str,
    tmp_dir: Path,
    limits: ScanLimits,
) -> LayerScan:
    raw = _Raw(pull)
    actual = sniff_compression(raw.peek(8))
    # The media type may lie (plain tar labelled gzip, and the reverse): the bytes decide.
    label = f" (labelled {compression}, its bytes are {actual})" if actual != compression else ""
    counted = _Counted(_decoder(raw, actual), digest, limits)
    try:
        scan = walk_tar(counted, digest, tmp_dir, limits=limits)
    except tarfile.TarError as exc:
        if "unexpected end" in str(exc):
            raise ContentError(f"layer {digest[:19]} is truncated ({exc}){label}") from None
        raise ContentError(
            f"layer {digest[:19]} is not a readable tar archive ({exc}){label}"
        ) from None
    except (EOFError, OSError, lzma_error()) as exc:
        raise ContentError(f"layer {digest[:19]} is truncated or corrupt ({exc}){label}") from None
    except ContentError as exc:
        if not label:
            raise
        raise ContentError(f"{exc}{label}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("zstandard"):
            raise ContentError(f"layer {digest[:19]} is not valid zstd ({exc}){label}") from None
        raise
    scan.uncompressed = counted.count
    return scan


def lzma_error() -> type[Exception]:
    import lzma

    return lzma.LZMAError


class _BlockingPull:
    """``_Pull`` for a source that can feed the worker thread directly
    (``LayerBlob.open_blocking``): no event-loop round trip per chunk."""

    def __init__(
        self, open_blocking: Callable[[threading.Event], Iterator[bytes]], budget: ByteBudget | None
    ) -> None:
        self.stop = threading.Event()
        self._open = open_blocking
        self._chunks: Iterator[bytes] | None = None
        self._budget = budget
        self.compressed = 0

    def __call__(self) -> bytes:
        if self.stop.is_set():
            raise ContentError("layer read was cancelled")
        if self._chunks is None:
            self._chunks = self._open(self.stop)
        for chunk in self._chunks:
            if not chunk:
                continue
            self.compressed += len(chunk)
            if self._budget is not None:
                self._budget.take(len(chunk))
            return bytes(chunk)
        return b""

    def close(self) -> None:
        """In the worker thread, once the scan is over: ends the source's stream."""
        closer = getattr(self._chunks, "close", None)
        if closer is not None:
            closer()


_STREAM_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_STREAM_POOL_LOCK = threading.Lock()
STREAM_THREADS = 32  # scans of blocking sources at once (most of them wait for their turn)


def _stream_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that scan ``open_blocking`` layers. Not the loop's default executor: the
    engine exports one image as one stream, so every layer of it is read at once and all
    but one wait for their turn in the stream; they must not take the threads that the
    rest of the process (caches, other requests) runs on."""
    global _STREAM_POOL
    with _STREAM_POOL_LOCK:
        if _STREAM_POOL is None:
            _STREAM_POOL = concurrent.futures.ThreadPoolExecutor(
                STREAM_THREADS, thread_name_prefix="layer-stream"
            )
        return _STREAM_POOL


def _scan_blocking_source(
    pull: _BlockingPull, compression: Compression, digest: str, tmp_dir: Path, limits: ScanLimits
) -> LayerScan:
    try:
        return _scan_blocking(pull, compression, digest, tmp_dir, limits)
    finally:
        pull.close()


async def scan_layer(blob: LayerBlob, tmp_dir: Path, limits: ScanLimits | None = None) -> LayerScan:
    """Stream ``blob`` once and index it; raises the source's errors or ContentError.
    A blob with ``open_blocking`` is read by the worker thread itself."""
    loop = asyncio.get_running_loop()
    limits = limits if limits is not None else ScanLimits()
    if blob.open_blocking is not None:
        direct = _BlockingPull(blob.open_blocking, limits.compressed)
        try:
            return await loop.run_in_executor(
                _stream_pool(),
                _scan_blocking_source,
                direct,
                blob.compression,
                blob.digest,
                tmp_dir,
                limits,
            )
        finally:
            direct.stop.set()  # a cancelled scan: the thread's blocked read gives up
    pull = _Pull(loop, blob.open(), limits.compressed)
    try:
        return await asyncio.to_thread(
            _scan_blocking, pull, blob.compression, blob.digest, tmp_dir, limits
        )
    finally:
        await pull.aclose()


__all__ = [
    "ByteBudget",
    "Captured",
    "Entry",
    "LayerScan",
    "ScanLimits",
    "normalise",
    "scan_layer",
    "walk_tar",
]
