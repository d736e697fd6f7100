"""Layer-facts cache (SQLite), manifest cache TTLs, and in-process single-flight."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bot.cache.sqlite import DB_NAME, SqliteLayerCache, SqliteManifestCache
from bot.config import Settings
from bot.errors import TimedOut
from bot.image.explain import Explainer
from bot.image.reference import parse_reference
from tests.fixtures.image_layers import (
    DiskImage,
    DiskSource,
    config,
    file,
    sized,
    sym,
    write_layer,
)

OS_RELEASE = 'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'


def ref(text: str) -> str:
    return str(parse_reference(text))


def two_images(tmp_path: Path) -> tuple[DiskSource, str, str, str]:
    blobs = tmp_path / "blobs"
    base = write_layer(
        blobs,
        [
            file("usr/lib/os-release", OS_RELEASE),
            sym("etc/os-release", "../usr/lib/os-release"),
            file("bin/sh", b"\x7fELF"),
            file("var/lib/dpkg/status", "Package: a\nStatus: install ok installed\n"),
            sized("usr/share/big", 400_000),
        ],
    )
    app_a = write_layer(blobs, [sized("srv/a", 1000)])
    app_b = write_layer(blobs, [sized("srv/b", 2000), sized("usr/share/big", 10, seed=3)])
    images = {
        ref("x.test/a:1"): DiskImage([base, app_a], config([("base", False), ("a", False)])),
        ref("x.test/b:1"): DiskImage(
            [base, app_b], config([("base", False), ("b", False)]), digest="sha256:" + "b" * 64
        ),
    }
    return DiskSource(images), base.digest, app_a.digest, app_b.digest


def explainer(cache: Path, source: DiskSource) -> Explainer:
    return Explainer(Settings(cache_dir=cache), sources={"registry": source})


async def test_shared_base_layer_is_read_once_and_cache_survives_restart(tmp_path: Path) -> None:
    source, base, a, b = two_images(tmp_path)
    cache = tmp_path / "cache"
    first = explainer(cache, source)
    facts_a = await first.facts("x.test/a:1")
    facts_b = await first.facts("x.test/b:1")
    assert source.opens == {base: 1, a: 1, b: 1}
    assert facts_b.wasted_bytes == 400_000 + 10  # big rewritten in b's layer (the recipe)

    # Same facts as an analysis that had to read every layer itself.
    cold_source, *_ = two_images(tmp_path / "again")
    cold = await explainer(tmp_path / "cold", cold_source).facts("x.test/b:1")
    assert cold.to_json() == facts_b.to_json()

    # A new Explainer (a new process, in effect) with the same cache dir reads nothing.
    restarted = explainer(cache, source)
    again = await restarted.facts("x.test/a:1")
    assert again.to_json() == facts_a.to_json()
    assert source.opens == {base: 1, a: 1, b: 1}
    await first.aclose()
    await restarted.aclose()


async def test_concurrent_requests_share_one_analysis(tmp_path: Path) -> None:
    source, base, a, _ = two_images(tmp_path)
    exp = explainer(tmp_path / "cache", source)
    results = await asyncio.gather(*(exp.facts("x.test/a:1") for _ in range(20)))
    assert source.opens == {base: 1, a: 1}
    assert source.resolves == 1
    assert all(r.to_json() == results[0].to_json() for r in results)
    results[0].advice.append("mutated")  # each caller owns its copy
    assert "mutated" not in results[1].advice


async def test_damaged_cache_rows_are_rescanned(tmp_path: Path) -> None:
    source, base, a, _ = two_images(tmp_path)
    cache = tmp_path / "cache"
    await explainer(cache, source).facts("x.test/a:1")
    conn = sqlite3.connect(cache / DB_NAME)
    conn.execute("UPDATE layer_facts SET data = ? WHERE digest = ?", (b"garbage", base))
    conn.commit()
    conn.close()
    facts = await explainer(cache, source).facts("x.test/a:1")
    assert source.opens == {base: 2, a: 1}
    assert facts.os is not None and facts.os.id == "debian"


async def test_layer_cache_round_trip_and_wal(tmp_path: Path) -> None:
    layers = SqliteLayerCache(tmp_path)
    assert await layers.get("sha256:none") is None
    await layers.put("sha256:x", {"v": 1, "k": [1, 2]})
    assert await SqliteLayerCache(tmp_path).get("sha256:x") == {"v": 1, "k": [1, 2]}
    conn = sqlite3.connect(tmp_path / DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_manifest_cache_ttl(tmp_path: Path) -> None:
    manifests = SqliteManifestCache(tmp_path)
    await manifests.set("manifest:docker.io/library/x@sha256:1", "application/json", b"{}", None)
    await manifests.set("manifest:docker.io/library/x:latest", "application/json", b"{1}", 3600)
    await manifests.set("manifest:docker.io/library/x:old", "application/json", b"{2}", 0)
    other = SqliteManifestCache(tmp_path)
    assert await other.get("manifest:docker.io/library/x@sha256:1") == ("application/json", b"{}")
    assert await other.get("manifest:docker.io/library/x:latest") == ("application/json", b"{1}")
    assert await other.get("manifest:docker.io/library/x:old") is None
    assert await other.get("manifest:docker.io/library/missing:1") is None


async def test_unwritable_cache_dir_degrades_to_no_cache(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache dir should be")
    layers = SqliteLayerCache(blocker)
    await layers.put("sha256:x", {"v": 1})
    assert await layers.get("sha256:x") is None


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a database at all " * 500)


def _truncated(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE filler (x)")
    conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 1000,)] * 200)
    conn.commit()
    conn.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", [_garbage, _truncated], ids=["garbage", "truncated"])
async def test_a_damaged_cache_file_is_rebuilt(
    tmp_path: Path, damage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.cache.sqlite import SqliteImageIndex

    damage(tmp_path / DB_NAME)
    layers = SqliteLayerCache(tmp_path, max_bytes=1 << 20)
    manifests = SqliteManifestCache(tmp_path, max_bytes=1 << 20)
    images = SqliteImageIndex(tmp_path)
    assert await layers.get("sha256:x") is None  # a miss, not an error
    await layers.put("sha256:x", {"v": 1})
    await manifests.set("manifest:r@x", "t", b"body", None)
    await images.record("r:1", "sha256:i", ["sha256:l1"])
    # Usable again, for these objects and for a new process reading the same file.
    assert await layers.get("sha256:x") == {"v": 1}
    assert await SqliteLayerCache(tmp_path).get("sha256:x") == {"v": 1}
    assert await SqliteManifestCache(tmp_path).get("manifest:r@x") == ("t", b"body")
    assert [s.reference for s in await images.bases(["sha256:l1", "sha256:l2"])] == ["r:1"]
    rebuilt = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(rebuilt) == 1, caplog.text  # said once, not on every call


class StallingSource(DiskSource):
    """Sends the first chunk of each layer, then stalls until told to stop."""

    def __init__(self, images: dict[str, DiskImage]) -> None:
        super().__init__(images)
        self.closed = asyncio.Event()

    def _opener(self, layer):
        async def stream():
            self.opens[layer.digest] += 1
            try:
                yield layer.path.read_bytes()[:512]
                await asyncio.Event().wait()  # never set: a registry that stopped sending
            finally:
                self.closed.set()

        return stream


async def test_stalled_download_times_out_and_is_cleaned_up(tmp_path: Path) -> None:
    source, *_ = two_images(tmp_path)
    stalling = StallingSource(source.images)
    settings = Settings(cache_dir=tmp_path / "cache", explain_timeout=0.5)
    exp = Explainer(settings, sources={"registry": stalling})
    with pytest.raises(TimedOut, match="took longer"):
        await exp.facts("x.test/a:1")
    await asyncio.wait_for(stalling.closed.wait(), timeout=10)
    # Nothing half-done was cached: a later request starts afresh.
    assert await SqliteLayerCache(tmp_path / "cache").get(next(iter(stalling.opens))) is None


def _writer(args: tuple[str, int]) -> int:
    directory, worker = args

    async def write() -> None:
        cache = SqliteLayerCache(Path(directory))
        for i in range(25):
            await cache.put(f"sha256:{worker}-{i}", {"worker": worker, "i": i})

    asyncio.run(write())
    return worker


def test_several_processes_share_one_cache_file(tmp_path: Path) -> None:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=3) as pool:
        done = list(pool.map(_writer, [(str(tmp_path), w) for w in range(3)]))
    assert done == [0, 1, 2]
    conn = sqlite3.connect(tmp_path / DB_NAME)
    rows = conn.execute("SELECT count(*) FROM layer_facts").fetchone()[0]
    conn.close()
    assert rows == 75


async def test_image_index_names_the_longest_seen_prefix(tmp_path: Path) -> None:
    from bot.cache.sqlite import SqliteImageIndex
    from bot.image.explain import base_match

    index = SqliteImageIndex(tmp_path)
    a, b, c = ("sha256:" + ch * 64 for ch in "abc")
    await index.record("docker.io/library/debian:12", "sha256:d1", [a])
    await index.record("example.test/runtime:1", "sha256:r1", [a, b])
    bases = await index.bases([a, b, c])
    assert [s.reference for s in bases] == ["example.test/runtime:1"]
    assert base_match(bases, 3) == {
        "reference": "example.test/runtime:1",
        "digest": "sha256:r1",
        "layers": 2,
        "of": 3,
        "confidence": "high",
        "also": [],
    }
    await index.record("example.test/other:1", "sha256:o1", [a, b])  # same layers, other image
    match = base_match(await index.bases([a, b, c]), 3)
    assert match is not None and match["confidence"] == "medium" and len(match["also"]) == 1
    assert await index.bases([c, a]) == []  # order matters: layers stack bottom up
    assert await index.bases([a]) == []  # a proper prefix only: an image is not its own base


def _entry_bytes(key: str, media_type: str, body: bytes) -> int:
    return len(key.encode()) + len(media_type.encode()) + len(body)


def _stored_bytes(path: Path) -> int:
    conn = sqlite3.connect(path / DB_NAME)
    try:
        layer = conn.execute(
            "SELECT COALESCE(SUM(length(digest) + length(data)), 0) FROM layer_facts"
        )
        manifest = conn.execute(
            "SELECT COALESCE(SUM(length(key) + length(media_type) + length(body)), 0)"
            " FROM manifests"
        )
        return int(layer.fetchone()[0]) + int(manifest.fetchone()[0])
    finally:
        conn.close()


async def test_the_cache_cap_evicts_least_recently_used_entries(tmp_path: Path) -> None:
    import os

    body = {name: os.urandom(1000) for name in "abcd"}
    one = _entry_bytes("manifest:r@a", "t", body["a"])
    cap = 3 * one + one // 2  # room for three entries, not four
    manifests = SqliteManifestCache(tmp_path, max_bytes=cap, touch_after=0)
    for name in "abc":
        await manifests.set(f"manifest:r@{name}", "t", body[name], None)
    assert await manifests.get("manifest:r@a") == ("t", body["a"])  # a is now recent, b is not
    await manifests.set("manifest:r@d", "t", body["d"], None)
    assert await manifests.get("manifest:r@b") is None  # least recently used: evicted
    for name in "acd":
        assert await manifests.get(f"manifest:r@{name}") == ("t", body[name])
    assert _stored_bytes(tmp_path) <= cap

    # Layer facts share the file and the cap: a big one pushes out the oldest manifests.
    layers = SqliteLayerCache(tmp_path, max_bytes=cap, touch_after=0)
    await layers.put("sha256:big", {"blob": os.urandom(1200).hex()})
    assert await layers.get("sha256:big") is not None
    assert _stored_bytes(tmp_path) <= cap
    assert await manifests.get("manifest:r@a") is None


async def test_expired_tags_go_first_and_no_cap_keeps_everything(tmp_path: Path) -> None:
    import os

    unbounded = SqliteManifestCache(tmp_path / "all")
    for n in range(20):
        await unbounded.set(f"manifest:r@{n}", "t", os.urandom(1000), None)
    assert all([await unbounded.get(f"manifest:r@{n}") for n in range(20)])

    body = os.urandom(1000)
    one = _entry_bytes("manifest:r@0", "t", body)
    capped = SqliteManifestCache(tmp_path / "capped", max_bytes=2 * one + one // 2)
    await capped.set("manifest:r@0", "t", body, None)  # oldest, content-addressed
    await capped.set("manifest:r:tag", "t", body, 0)  # a tag that has expired already
    await capped.set("manifest:r@1", "t", body, None)
    assert await capped.get("manifest:r@0") == ("t", body)  # the expired tag went instead
    assert await capped.get("manifest:r@1") == ("t", body)


async def test_an_entry_bigger_than_the_cap_is_not_stored_and_evicts_nothing(
    tmp_path: Path,
) -> None:
    import os

    cap = 20_000
    manifests = SqliteManifestCache(tmp_path, max_bytes=cap, touch_after=0)
    layers = SqliteLayerCache(tmp_path, max_bytes=cap, touch_after=0)
    kept = {f"manifest:r@{n}": os.urandom(1000) for n in range(5)}
    for key, body in kept.items():
        await manifests.set(key, "t", body, None)
    await manifests.set("manifest:r:tag", "t", b"old", 300)
    await manifests.set("manifest:r:tag", "t", os.urandom(cap + 1), 300)  # cannot fit
    await layers.put("sha256:huge", {"blob": os.urandom(cap).hex()})  # nor can this
    assert await manifests.get("manifest:r:tag") is None  # not the stale value either
    assert await layers.get("sha256:huge") is None
    for key, body in kept.items():  # the entries that fit are all still there
        assert await manifests.get(key) == ("t", body)


async def test_a_cache_file_from_before_the_cap_is_upgraded(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.executescript(
        """
        CREATE TABLE layer_facts (digest TEXT PRIMARY KEY, data BLOB NOT NULL,
                                  stored REAL NOT NULL);
        CREATE TABLE manifests (key TEXT PRIMARY KEY, media_type TEXT NOT NULL, body BLOB NOT NULL,
                                expires REAL);
        """
    )
    conn.execute("INSERT INTO manifests VALUES ('manifest:r@old', 't', ?, NULL)", (b"x" * 500,))
    conn.commit()
    conn.close()
    manifests = SqliteManifestCache(tmp_path, max_bytes=800)
    assert await manifests.get("manifest:r@old") == ("t", b"x" * 500)
    await manifests.set("manifest:r@new", "t", b"y" * 500, None)  # over the cap: old goes
    assert await manifests.get("manifest:r@old") is None
    assert await manifests.get("manifest:r@new") == ("t", b"y" * 500)


def test_cache_max_bytes_setting() -> None:
    assert Settings(_env_file=None).cache_max_bytes == 1 << 30
    assert Settings(_env_file=None, DOCKWISE_CACHE_MAX_BYTES="0").cache_max_bytes == 0
    with pytest.raises(ValueError, match="DOCKWISE_CACHE_MAX_BYTES"):
        Settings(_env_file=None, DOCKWISE_CACHE_MAX_BYTES="-1")


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("DOCKWISE_CACHE_MAX_BYTES", "-1", "DOCKWISE_CACHE_MAX_BYTES: Input should be greater"),
        ("DOCKWISE_REGISTRY_MIRRORS", "docker.io=mirror", "DOCKWISE_REGISTRY_MIRRORS entry"),
    ],
)
def test_a_bad_cache_or_mirror_setting_stops_serve_with_one_line(
    tmp_path: Path, variable: str, value: str, said: str
) -> None:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        variable: value,
        "DOCKWISE_CACHE_DIR": str(tmp_path),
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": "s3cret",
        "DOCKWISE_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dockwise: error: ") and said in lines[0]
