"""rpm Berkeley DB and ndb databases, made by the real rpm and db5.3 tools (fixtures/rpmdb.py)."""

from __future__ import annotations

from pathlib import Path

from bot.image import rpmdb
from tests.fixtures.rpmdb import ensure_rpm_databases, rpm_qa, write_ndb


def test_berkeley_db_counts_what_rpm_lists() -> None:
    dbs = ensure_rpm_databases()
    for packages in (dbs.bdb, dbs.bdb_inline):  # headers on overflow pages, and inline
        truth = rpm_qa(packages.parent, "bdb_ro")
        assert truth == dbs.names
        assert rpmdb.count_bdb_packages(packages) == len(truth) == 6


def test_header_names_are_the_packages_rpm_lists() -> None:
    dbs = ensure_rpm_databases()
    names = sorted(rpmdb.header_name(blob) or "" for _, blob in dbs.blobs)
    assert names == sorted(n.split("-")[0] for n in dbs.names)


def test_ndb_counts_every_header(tmp_path: Path) -> None:
    dbs = ensure_rpm_databases()
    write_ndb(tmp_path / "Packages.db", dbs.blobs)
    assert rpmdb.count_ndb_packages(tmp_path / "Packages.db") == 6


def test_junk_and_truncated_databases_are_not_packages(tmp_path: Path) -> None:
    dbs = ensure_rpm_databases()
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 8192)
    assert rpmdb.count_bdb_packages(junk) is None
    assert rpmdb.count_ndb_packages(junk) is None
    cut = tmp_path / "cut"
    data = dbs.bdb.read_bytes()
    for size in (100, 4096, len(data) // 2, len(data) - 1):
        cut.write_bytes(data[:size])
        count = rpmdb.count_bdb_packages(cut)
        assert count is None or 0 <= count <= 6
    assert rpmdb.count_bdb_packages(tmp_path / "missing") is None


def test_crafted_overflow_chains_cost_linear_work(tmp_path: Path) -> None:
    """Every item of every hash page pointing at one long overflow chain: the reader's
    page budget keeps the work linear in the file size (finishing is the test)."""
    import struct

    page, pages = 512, 4096
    data = bytearray(page * pages)
    struct.pack_into("<IIII", data, 12, rpmdb.BDB_HASH_MAGIC, 9, page, 0)
    half = pages // 2
    for pgno in range(1, half):  # hash pages full of offpage items
        base = pgno * page
        data[base + 25] = rpmdb.P_HASH
        entries = (page - 26) // 16 & ~1
        struct.pack_into("<H", data, base + 20, entries)
        for i in range(entries):
            offset = page - 12 * (i + 1)
            struct.pack_into("<H", data, base + 26 + 2 * i, offset)
            struct.pack_into("<BxxxII", data, base + offset, rpmdb.H_OFFPAGE, half, 10**9)
    for pgno in range(half, pages):  # one chain through the other half
        base = pgno * page
        data[base + 25] = rpmdb.P_OVERFLOW
        struct.pack_into("<IH", data, base + 16, pgno + 1 if pgno + 1 < pages else 0, 0)
    (tmp_path / "Packages").write_bytes(bytes(data))
    assert rpmdb.count_bdb_packages(tmp_path / "Packages") == 0
