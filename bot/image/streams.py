"""Byte plumbing shared by the sources and the layer reader (no format knowledge here).

``Forward`` turns a source of byte chunks into a forward-only, seekable file object: what
``tarfile``'s random-access ``r:`` mode needs to walk a stream that can only be read once.
Reads are served by moving an offset inside the current chunk (one copy of the bytes
read, none of the rest); skipping forward drops whole chunks without copying them.
"""

from __future__ import annotations

import io
from collections.abc import Callable

CHUNK = 1 << 20  # bytes asked of the underlying source per refill


class Forward(io.RawIOBase):
    """A forward-only seekable reader over ``pull(n)``: at most n bytes per call, b"" at
    the end (a file's ``read``, or a stream's).

    - ``read(n)`` returns n bytes (fewer only at the end), ``read1(n)`` at most n bytes
      from the current chunk (no joining: what a copy loop wants);
    - ``seek(pos)`` / ``seek(delta, 1)`` move forward by skipping bytes; a position past
      the end stops at the end, where reads return b"". Seeking backwards, or from the end,
      raises ``OSError`` (``io.UnsupportedOperation``);
    - ``tell()`` is the number of bytes consumed so far."""

    def __init__(self, pull: Callable[[int], bytes], chunk: int = CHUNK) -> None:
        self._pull = pull
        self._chunk = chunk
        self._buf = b""
        self._off = 0
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def _fill(self) -> bool:
        self._buf, self._off = self._pull(self._chunk), 0
        return bool(self._buf)

    def read1(self, size: int = -1) -> bytes:
        if self._off >= len(self._buf) and not self._fill():
            return b""
        start, end = self._off, len(self._buf)
        if 0 <= size < end - start:
            end = start + size
        self._off = end
        self._pos += end - start
        return self._buf if start == 0 and end == len(self._buf) else self._buf[start:end]

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self.read1():
                parts.append(chunk)
            return b"".join(parts)
        avail = len(self._buf) - self._off
        if avail >= size:
            start = self._off
            self._off += size
            self._pos += size
            return self._buf[start : self._off]
        parts = []
        got = 0
        while got < size and (chunk := self.read1(size - got)):
            parts.append(chunk)
            got += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read1(len(target))
        target[: len(data)] = data
        return len(data)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            pos += self._pos
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a forward-only stream cannot seek from its end")
        if pos < self._pos:
            raise io.UnsupportedOperation("a forward-only stream cannot seek backwards")
        skip = pos - self._pos
        while skip > 0:
            avail = len(self._buf) - self._off
            if avail >= skip:
                self._off += skip
                self._pos += skip
                break
            self._pos += avail
            skip -= avail
            self._off = len(self._buf)
            if not self._fill():
                break
        return self._pos


__all__ = ["CHUNK", "Forward"]
