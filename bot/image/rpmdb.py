"""rpm package databases that are not sqlite: Berkeley DB ``Packages`` and SUSE's ndb.

Both hold one rpm *header blob* per installed package. A header blob (rpm's
lib/header.c, "headerImport") is ``il`` (uint32 BE, index entries), ``dl`` (uint32 BE, data
bytes), ``il`` index entries of 16 bytes (tag, type, offset, count; BE) and ``dl`` bytes of
data; the package name is tag 1000 (RPMTAG_NAME, a STRING). A record counts as a package
when it is a well-formed header blob with a name, as ``rpm -qa`` lists them.

- Berkeley DB hash (rpm <= 4.15, UBI 8, CentOS 7/8, Amazon Linux 2): ``var/lib/rpm/Packages``,
  key = the 4-byte package instance number (native order), value = the header blob. Pages
  are read as Berkeley DB 4.x-5.x writes them (db/dbinc/db_page.h): a metadata page
  (magic 0x061561, page size at offset 20, last page number at 32, byte order from the
  magic), hash pages (type 2 or 13) whose items are inline (H_KEYDATA) or chains of
  overflow pages (H_OFFPAGE -> type 7 pages). Every hash page is read, as ``db_dump -r``
  and go-rpmdb do, so no bucket arithmetic is trusted.
- ndb (rpm >= 4.15 on openSUSE / SLES): ``Packages.db`` (rpm's lib/backend/ndb/rpmpkg.c):
  a little-endian header (magic "RpmP", slot page count at 12), 16-byte slots ("Slot",
  package index, block offset, block count; index 0 = free) and blobs at ``16 * blkoff``
  ("BlbS", package index, generation, length, then the header blob).

The functions read a private temp copy (``Path``) with a hard cap on work and never raise on
junk: they return None when the file is not such a database.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from pathlib import Path

BDB_HASH_MAGIC = 0x061561
P_HASH_UNSORTED = 2
P_OVERFLOW = 7
P_HASH = 13
H_KEYDATA = 1
H_OFFPAGE = 3
PAGE_HEADER = 26  # lsn 8, pgno 4, prev 4, next 4, entries 2, hf_offset 2, level 1, type 1
NDB_MAGIC = b"RpmP"
NDB_SLOT_MAGIC = b"Slot"
NDB_BLOB_MAGIC = b"BlbS"
NDB_PAGE = 4096
NDB_HEADER = 32
NDB_SLOT = 16
NDB_BLOCK = 16
RPMTAG_NAME = 1000
RPM_STRING = 6
MAX_HEADER_ENTRIES = 0xFFFF
MAX_HEADER_DATA = 256 * 1024 * 1024
MAX_RECORDS = 1_000_000


def header_name(blob: bytes) -> str | None:
    """The package name in an rpm header blob; None when it is not a well-formed header."""
    if len(blob) < 8:
        return None
    il, dl = struct.unpack_from(">II", blob, 0)
    if not 0 < il <= MAX_HEADER_ENTRIES or dl > MAX_HEADER_DATA:
        return None
    data_start = 8 + 16 * il
    if data_start + dl > len(blob):
        return None
    for i in range(il):
        tag, kind, offset, count = struct.unpack_from(">iIiI", blob, 8 + 16 * i)
        if tag == RPMTAG_NAME and kind == RPM_STRING and 0 <= offset < dl and count == 1:
            start = data_start + offset
            end = blob.find(b"\0", start, data_start + dl)
            if end <= start:
                return None
            return blob[start:end].decode("utf-8", "replace")
    return None


# --------------------------------------------------------------------------- Berkeley DB


def _bdb_values(data: bytes) -> Iterator[bytes] | None:
    if len(data) < 512:
        return None
    for order in ("<", ">"):
        if struct.unpack_from(f"{order}I", data, 12)[0] == BDB_HASH_MAGIC:
            break
    else:
        return None
    page_size = struct.unpack_from(f"{order}I", data, 20)[0]
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        return None
    pages = len(data) // page_size
    budget = [2 * pages]  # overflow pages all chains may visit: crafted chains stay linear

    def overflow(pgno: int, total: int) -> bytes | None:
        out = bytearray()
        while pgno != 0 and len(out) < total:
            budget[0] -= 1
            if pgno >= pages or budget[0] < 0:
                return None
            base = pgno * page_size
            if data[base + 25] != P_OVERFLOW:
                return None
            next_pgno = struct.unpack_from(f"{order}I", data, base + 16)[0]
            used = struct.unpack_from(f"{order}H", data, base + 22)[0]
            out += data[base + PAGE_HEADER : base + PAGE_HEADER + min(used, page_size)]
            pgno = next_pgno
        return bytes(out[:total]) if len(out) >= total else None

    def walk() -> Iterator[bytes]:
        for pgno in range(1, pages):
            base = pgno * page_size
            if data[base + 25] not in (P_HASH, P_HASH_UNSORTED):
                continue
            entries = struct.unpack_from(f"{order}H", data, base + 20)[0]
            if PAGE_HEADER + 2 * entries > page_size:
                continue
            offsets = struct.unpack_from(f"{order}{entries}H", data, base + PAGE_HEADER)
            for index in range(1, entries, 2):  # items alternate key, data
                start = offsets[index]
                end = offsets[index - 1] if index > 0 else page_size
                if not PAGE_HEADER <= start < end <= page_size:
                    continue
                item = data[base + start : base + end]
                if item[0] == H_KEYDATA:
                    yield item[1:]
                elif item[0] == H_OFFPAGE and len(item) >= 12:
                    first, total = struct.unpack_from(f"{order}II", item, 4)
                    value = overflow(first, total)
                    if value is not None:
                        yield value

    return walk()


def count_bdb_packages(path: Path) -> int | None:
    """Installed packages in a Berkeley DB hash ``Packages`` file; None if it is not one."""
    data = _read(path)
    if data is None:
        return None
    values = _bdb_values(data)
    if values is None:
        return None
    count = 0
    for value in values:
        if header_name(value) is not None:
            count += 1
            if count >= MAX_RECORDS:
                break
    return count


# --------------------------------------------------------------------------- ndb


def count_ndb_packages(path: Path) -> int | None:
    """Installed packages in an rpm ndb ``Packages.db``; None if it is not one."""
    data = _read(path)
    if data is None or len(data) < NDB_HEADER or data[:4] != NDB_MAGIC:
        return None
    slot_pages = struct.unpack_from("<I", data, 12)[0]
    slots_end = min(slot_pages * NDB_PAGE, len(data))
    count = 0
    seen: set[int] = set()
    for offset in range(NDB_HEADER, slots_end - NDB_SLOT + 1, NDB_SLOT):
        if data[offset : offset + 4] != NDB_SLOT_MAGIC:
            continue
        pkgidx, blkoff, blkcnt = struct.unpack_from("<III", data, offset + 4)
        if pkgidx == 0 or pkgidx in seen:
            continue
        start = blkoff * NDB_BLOCK
        if start + 16 > len(data) or data[start : start + 4] != NDB_BLOB_MAGIC:
            continue
        blob_idx, _generation, length = struct.unpack_from("<III", data, start + 4)
        if blob_idx != pkgidx or length > blkcnt * NDB_BLOCK:
            continue
        blob = data[start + 16 : start + 16 + length]
        if len(blob) == length and header_name(blob) is not None:
            seen.add(pkgidx)
            count += 1
            if count >= MAX_RECORDS:
                break
    return count


def _read(path: Path) -> bytes | None:
    with contextlib.suppress(OSError):
        return path.read_bytes()
    return None


__all__ = ["count_bdb_packages", "count_ndb_packages", "header_name"]
