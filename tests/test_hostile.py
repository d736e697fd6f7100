"""Hostile images: size caps, bombs, truncation, lying registries, escaping tar paths,
link loops, giant headers, ill-typed configs, malformed references.

Every case must end in one clear ``DockwiseError`` line or in correct facts: never another
exception, a hang, or a file written outside the cache dir. Layers go through the real
``scan_layer``; images through the real ``Explainer`` pulling over HTTP from a lying
registry (``HostileRegistry``, for what a real registry refuses to store) or from the real
Debian docker-registry (for what it accepts).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.errors import ContentError, DockwiseError, ImageNotFound
from bot.image.explain import Explainer
from bot.image.facts import ImageFacts
from bot.image.layers import ByteBudget, LayerScan, ScanLimits, scan_layer
from bot.image.render import MAX_LAYER_LINES, render
from tests.fixtures.hostile import (
    MIB,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    HostileRegistry,
    claimed_header,
    digest_of,
    gz,
    link,
    memory_blob,
    reg,
    snapshot,
    tar_of,
    zeros_gzip,
)
from tests.fixtures.registry import RegistryServer, make_layer, push_image

Setup = Callable[[HostileRegistry], object]
OS_RELEASE = b'ID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME="Alpine Linux v3.20"\n'
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- layer scans


async def scan(data: bytes, tmp_path: Path, compression: Any = "none", **limits: Any) -> LayerScan:
    blob = memory_blob(data, compression)
    return await asyncio.wait_for(scan_layer(blob, tmp_path / "tmp", ScanLimits(**limits)), 60)


async def test_gzip_bomb_stops_at_the_layer_cap_with_bounded_memory(tmp_path: Path) -> None:
    # 256 MiB of zeros after a valid tar member: a few hundred KiB compressed.
    bomb = zeros_gzip(tar_of([reg("etc/os-release", OS_RELEASE)])[:-1024], 256 * MIB)
    assert len(bomb) < MIB
    tracemalloc.start()
    try:
        with pytest.raises(ContentError, match=r"unpacks to more than 16 MiB"):
            await scan(bomb, tmp_path, "gzip", max_layer_uncompressed=16 * MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * MIB  # the 256 MiB never sit in memory


async def test_zstd_bomb_stops_at_the_layer_cap(tmp_path: Path) -> None:
    import zstandard

    comp = zstandard.ZstdCompressor(level=3).compressobj()
    parts = [comp.compress(tar_of([reg("etc/os-release", OS_RELEASE)])[:-1024])]
    parts += [comp.compress(bytes(MIB)) for _ in range(128)]
    bomb = b"".join([*parts, comp.flush()])
    assert len(bomb) < MIB
    with pytest.raises(ContentError, match=r"unpacks to more than 16 MiB"):
        await scan(bomb, tmp_path, "zstd", max_layer_uncompressed=16 * MIB)


async def test_unpacked_budget_is_shared_by_the_layers_of_one_image(tmp_path: Path) -> None:
    layer = gz(tar_of([reg("blob", bytes(6 * MIB))]))
    budget = ByteBudget(10 * MIB, "unpacked")
    first = await scan(layer, tmp_path, "gzip", unpacked=budget)
    assert first.entries["blob"].size == 6 * MIB
    with pytest.raises(ContentError, match=r"image is too large to explain: more than 10 MiB"):
        await scan(layer, tmp_path, "gzip", unpacked=budget)


async def test_compressed_budget_counts_downloaded_bytes(tmp_path: Path) -> None:
    layer = gz(tar_of([reg("noise", os.urandom(3 * MIB))]))  # about 3 MiB on the wire
    budget = ByteBudget(2 * MIB, "compressed")
    with pytest.raises(ContentError, match=r"more than 2 MiB compressed"):
        await scan(layer, tmp_path, "gzip", compressed=budget)


@pytest.mark.parametrize(
    ("name", "data", "compression", "message"),
    [
        (
            "gzip cut mid-stream",
            gz(tar_of([reg("a", os.urandom(300_000))]))[:150_000],
            "gzip",
            "truncated",
        ),
        ("tar cut mid-member", tar_of([reg("a", bytes(100_000))])[:50_000], "none", "truncated"),
        ("tar cut mid-header", tar_of([reg("a", b"x")])[:300], "none", "truncated|not a readable"),
        # The bytes decide the compression (as Docker does); the error says both.
        ("not gzip at all", b"this is not gzip" * 100, "gzip", "labelled gzip, its bytes are none"),
        ("zstd magic, garbage", b"\x28\xb5\x2f\xfd garbage" * 10, "gzip", "zstd"),
        ("empty blob", b"", "none", "not a readable tar"),
        ("random bytes", bytes(range(256)) * 8, "none", "not a readable tar|truncated"),
        (
            "member claims 1 TB",
            claimed_header("big", 10**12) + bytes(1024),
            "none",
            "claiming 1000000000000 bytes",
        ),
        (
            "member claims 100 MiB in 1 KiB",
            claimed_header("big", 100 * MIB) + bytes(1024),
            "none",
            "truncated",
        ),
        (
            "GNU long name claims 1 TB",
            claimed_header("././@LongLink", 10**12, tarfile.GNUTYPE_LONGNAME) + bytes(1024),
            "none",
            "tar header record",
        ),
        (
            "GNU long name of 3 MiB",
            tar_of([reg("n" * (3 * MIB), b"x")]),
            "none",
            "tar header record",
        ),
        (
            "PAX header of 3 MiB",
            tar_of([reg("p" * (3 * MIB), b"x")], tarfile.PAX_FORMAT),
            "none",
            "tar header record",
        ),
    ],
)
async def test_broken_and_oversized_layers_give_one_clear_error(
    tmp_path: Path, name: str, data: bytes, compression: str, message: str
) -> None:
    with pytest.raises(ContentError, match=message) as caught:
        await scan(data, tmp_path, compression)
    assert "\n" not in str(caught.value)


async def test_escaping_paths_and_links_are_indexed_inside_the_image_only(tmp_path: Path) -> None:
    outside = tmp_path / "escape-target"
    layer = tar_of(
        [
            reg("/etc/os-release", OS_RELEASE),  # absolute: the image's /etc/os-release
            reg("../../../escape-target", b"pwned"),
            reg("usr/../../../escape-target2", b"pwned"),
            link("etc/passwd", "../../../../etc/passwd", hard=True),
            link("lib/apk/db/installed", "/etc/shadow", hard=True),  # the image's etc/shadow
            link("bin/sh", "/bin/sh"),
            link("a", "b"),
            link("b", "a"),
            reg(".wh...", b""),  # would "delete" the parent of the root
            reg("etc/.wh..", b""),
            reg("etc/.wh.gone", b""),
        ]
    )
    before = snapshot([tmp_path])
    result = await scan(layer, tmp_path)
    assert set(result.entries) == {"etc/os-release", "lib/apk/db/installed", "bin/sh", "a", "b"}
    assert result.entries["lib/apk/db/installed"].link == "etc/shadow"
    assert result.whiteouts == ["etc/gone"]
    assert result.files["etc/os-release"].value == {
        "ID": "alpine",
        "VERSION_ID": "3.20.3",
        "PRETTY_NAME": "Alpine Linux v3.20",
    }
    assert not outside.exists()
    assert snapshot([tmp_path]) - before <= {str(tmp_path / "tmp")}


# --------------------------------------------------------------------------- lying registry


@pytest.fixture
async def hostile() -> AsyncIterator[HostileRegistry]:
    server = HostileRegistry()
    await server.start()
    yield server
    await server.stop()


def config(**cfg: Any) -> dict[str, Any]:
    return {"architecture": "amd64", "os": "linux", "config": cfg, "rootfs": {}}


def alpine_layer() -> bytes:
    return gz(tar_of([reg("etc/os-release", OS_RELEASE), reg("bin/busybox", b"\x7fELF")]))


def manifest_doc(server: HostileRegistry, layers: list[dict[str, Any]]) -> dict[str, Any]:
    cfg = json.dumps(config()).encode()
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": server.blob(cfg), "size": len(cfg)},
        "layers": layers,
    }


def with_manifest(body: bytes | dict[str, Any], content_type: str = OCI_MANIFEST) -> Setup:
    return lambda s: s.manifest("x/app", "1", body, content_type)


def with_layers(
    layers: Callable[[HostileRegistry], list[Any]],
) -> Setup:
    return lambda s: s.manifest("x/app", "1", manifest_doc(s, layers(s)))


def with_config(body: bytes, media_type: str = OCI_CONFIG) -> Setup:
    def setup(s: HostileRegistry) -> None:
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": media_type, "digest": s.blob(body), "size": len(body)},
            "layers": [],
        }
        s.manifest("x/app", "1", doc)

    return setup


def with_image(layers: list[bytes], **kw: Any) -> Setup:
    return lambda s: s.image("x/app", "1", layers, **kw)


def lying_blob(s: HostileRegistry) -> list[dict[str, Any]]:
    real = alpine_layer()
    claimed = digest_of(b"something else")
    s.blob(real, claimed)
    return [
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": claimed,
            "size": len(real),
        }
    ]


def lying_config(s: HostileRegistry) -> None:
    good = json.dumps(config()).encode()
    claimed = digest_of(b"{}")
    s.blob(good, claimed)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": claimed, "size": len(good)},
        "layers": [],
    }
    s.manifest("x/app", "1", doc)


def lying_manifest_header(s: HostileRegistry) -> None:
    s.manifest("x/app", "1", manifest_doc(s, []), digest_header=digest_of(b"other"))


def nested_indexes(depth: int) -> Setup:
    def setup(s: HostileRegistry) -> None:
        digest = s.image("x/app", "leaf", [alpine_layer()])
        body = s.manifests[("x/app", "leaf")].body
        media, size = OCI_MANIFEST, len(body)
        for level in range(depth):
            index = {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": media,
                        "digest": digest,
                        "size": size,
                        "platform": {"os": "linux", "architecture": "amd64"},
                    }
                ],
            }
            raw = json.dumps(index).encode()
            digest = s.manifest("x/app", "1" if level == depth - 1 else f"i{level}", raw, OCI_INDEX)
            media, size = OCI_INDEX, len(raw)

    return setup


def self_index(s: HostileRegistry) -> None:
    # An index whose only entry names a digest under which the server serves the index
    # itself: content addressing makes a real loop impossible, the digest check catches it.
    fake = digest_of(b"loop")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_INDEX,
                "digest": fake,
                "size": 10,
                "platform": {"os": "linux", "architecture": "amd64"},
            }
        ],
    }
    raw = json.dumps(index).encode()
    s.manifest("x/app", "1", raw, OCI_INDEX)
    s.manifests[("x/app", fake)] = s.manifests[("x/app", "1")]


def gz_layer_desc(s: HostileRegistry, data: bytes, **extra: Any) -> dict[str, Any]:
    desc = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": s.blob(data),
        "size": len(data),
    }
    desc.update(extra)
    return desc


GOOD = "sha256:" + "a" * 64
CASES: list[tuple[str, Setup, type[DockwiseError], str]] = [
    ("manifest not JSON", with_manifest(b"<html>hello</html>"), ContentError, "not valid JSON"),
    ("manifest JSON list", with_manifest(b"[1, 2]"), ContentError, "not a JSON object"),
    ("manifest binary", with_manifest(bytes(range(256))), ContentError, "not valid JSON"),
    (
        "wrong mediaType",
        with_manifest({"schemaVersion": 2, "mediaType": "text/plain"}),
        ContentError,
        "unsupported manifest type",
    ),
    (
        "schemaVersion 1",
        with_manifest({"schemaVersion": 1, "name": "x/app", "fsLayers": []}),
        ContentError,
        "schema 1",
    ),
    (
        "schema 1 content type",
        with_manifest(
            {"name": "x/app"}, "application/vnd.docker.distribution.manifest.v1+prettyjws"
        ),
        ContentError,
        "schema 1",
    ),
    (
        "missing config",
        with_manifest({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}),
        ContentError,
        "has no config",
    ),
    (
        "config is a string",
        with_manifest(
            {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": "sha256:x", "layers": []}
        ),
        ContentError,
        "has no config",
    ),
    (
        "config digest malformed",
        with_manifest(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": "sha256:zz"},
                "layers": [],
            }
        ),
        ContentError,
        "malformed digest",
    ),
    (
        "config of a helm chart",
        with_config(b"{}", "application/vnd.cncf.helm.config.v1+json"),
        ContentError,
        "not a container image",
    ),
    ("config not JSON", with_config(b"\xff\xfe not json"), ContentError, "not valid JSON"),
    ("config JSON list", with_config(b"[]"), ContentError, "not a JSON object"),
    (
        "config over 8 MiB",
        with_config(b'{"pad": "' + b"x" * (9 * MIB) + b'"}'),
        ContentError,
        r"config of .* is too large .*8 MiB",
    ),
    (
        "manifest over 4 MiB",
        with_manifest({"schemaVersion": 2, "pad": "x" * (5 * MIB)}),
        ContentError,
        r"manifest of .* is too large .*4 MiB",
    ),
    (
        "layers not a list",
        lambda s: s.manifest("x/app", "1", {**manifest_doc(s, []), "layers": {"a": 1}}),
        ContentError,
        "no layer list",
    ),
    (
        "layer bogus digest",
        with_layers(lambda s: [{"mediaType": OCI_LAYER_TAR, "digest": "sha256:bogus"}]),
        ContentError,
        "malformed digest",
    ),
    (
        "layer md5 digest",
        with_layers(lambda s: [{"mediaType": OCI_LAYER_TAR, "digest": "md5:" + "a" * 32}]),
        ContentError,
        "malformed digest",
    ),
    (
        "layer entry not a dict",
        with_layers(lambda s: ["sha256:" + "a" * 64]),
        ContentError,
        "malformed layer entry",
    ),
    (
        "layer blob missing",
        with_layers(lambda s: [{"mediaType": OCI_LAYER_TAR, "digest": GOOD}]),
        ImageNotFound,
        "not found",
    ),
    (
        "layer unsupported type",
        with_layers(lambda s: [gz_layer_desc(s, alpine_layer(), mediaType="application/x-foo")]),
        ContentError,
        "unsupported layer type",
    ),
    ("layer blob wrong digest", with_layers(lying_blob), ContentError, "does not match"),
    ("config blob wrong digest", lying_config, ContentError, "does not match"),
    ("manifest digest header lies", lying_manifest_header, ContentError, "does not match"),
    (
        "layer bigger than declared",
        with_layers(lambda s: [gz_layer_desc(s, alpine_layer(), size=10)]),
        ContentError,
        "larger than its size",
    ),
    (
        "layer smaller than declared",
        with_layers(lambda s: [gz_layer_desc(s, alpine_layer(), size=10**6)]),
        ContentError,
        "expected 1000000",
    ),
    (
        "layers declare 3 GiB",
        with_layers(lambda s: [gz_layer_desc(s, alpine_layer(), size=3 * 1024**3)]),
        ContentError,
        r"too large to explain.*2 GiB",
    ),
    (
        "1001 layers",
        with_layers(lambda s: [gz_layer_desc(s, alpine_layer())] * 1001),
        ContentError,
        "1001 layers",
    ),
    (
        "index without manifests",
        with_manifest({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": "no"}, OCI_INDEX),
        ContentError,
        "no manifest list",
    ),
    ("index nested 5 deep", nested_indexes(5), ContentError, "nests indexes too deeply"),
    ("index points to itself", self_index, ContentError, "does not match"),
    (
        "index without our platform",
        with_manifest(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {"digest": GOOD, "platform": {"os": "plan9", "architecture": "mips"}}
                ],
            },
            OCI_INDEX,
        ),
        ImageNotFound,
        "no linux/amd64 variant",
    ),
    (
        "gzip bomb layer truncated",
        with_image([zeros_gzip(b"", 8 * MIB)[:4000]]),
        ContentError,
        "truncated",
    ),
    (
        "layer not gzip",
        with_image([b"plain text, not gzip" * 10]),
        ContentError,
        r"layer 1 of 1 \(sha256:[0-9a-f]{64}\): .*labelled gzip",
    ),
    (
        "layer zstd garbage",
        with_image(
            [b"\x28\xb5\x2f\xfd garbage"], layer_type="application/vnd.oci.image.layer.v1.tar+zstd"
        ),
        ContentError,
        "zstd",
    ),
    (
        "layer with 3 MiB PAX header",
        with_image([gz(tar_of([reg("p" * 3 * MIB, b"x")], tarfile.PAX_FORMAT))]),
        ContentError,
        "tar header record",
    ),
    (
        "layer member claims 1 TB",
        with_image([gz(claimed_header("big", 10**12) + bytes(2048))]),
        ContentError,
        "per-layer limit",
    ),
    (
        "layer member claims 50 MiB",
        with_image([gz(claimed_header("big", 50 * MIB) + bytes(2048))]),
        ContentError,
        "truncated",
    ),
]


def settings_for(server_host: str, tmp_path: Path) -> Settings:
    return Settings(cache_dir=tmp_path / "cache", insecure_registries=[server_host])


async def facts_of(host: str, tmp_path: Path, repo: str = "x/app", tag: str = "1") -> ImageFacts:
    explainer = Explainer(settings_for(host, tmp_path))
    try:
        return await asyncio.wait_for(
            explainer.facts(f"{host}/{repo}:{tag}", source="registry"), 120
        )
    finally:
        await explainer.aclose()


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd, HOME and tempfile's directory inside ``tmp_path``, so a stray write would show
    up in a snapshot of it."""
    for name in ("cwd", "home", "tmp"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path


@pytest.mark.parametrize(
    ("setup", "error", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_crafted_registry_content_gives_one_clear_error(
    hostile: HostileRegistry,
    sandbox: Path,
    setup: Setup,
    error: type[DockwiseError],
    message: str,
) -> None:
    setup(hostile)
    before = snapshot([sandbox])
    with pytest.raises(DockwiseError, match=message) as caught:
        await facts_of(hostile.host, sandbox)
    assert type(caught.value) is error, caught.value
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400
    cache = str(sandbox / "cache")
    assert {p for p in snapshot([sandbox]) - before if not p.startswith(cache)} == set()


async def test_hostile_tar_paths_and_links_give_correct_facts(
    hostile: HostileRegistry, sandbox: Path
) -> None:
    layer = gz(
        tar_of(
            [
                reg("/etc/os-release", OS_RELEASE),
                reg("../../../cwd/escaped", b"pwned"),
                reg("/../../home/escaped", b"pwned"),
                link("lib/apk/db/installed", "../../../../etc/passwd", hard=True),
                link("bin/sh", "/bin/sh"),  # loops onto itself
                link("bin/bash", "ash"),
                link("bin/ash", "bash"),  # a -> b -> a
                link("usr/lib/os-release", "../../usr/lib/os-release"),
                reg("var/lib/rpm/rpmdb.sqlite", b"not sqlite at all"),
            ]
        )
    )
    hostile.image("x/app", "1", [layer])
    before = snapshot([sandbox])
    facts = await facts_of(hostile.host, sandbox)
    assert facts.os is not None and facts.os.id == "alpine"
    assert facts.shell is False  # every shell path loops: none resolves to a file
    assert facts.packages is not None and facts.packages.manager == "rpm"
    assert facts.packages.count is None  # unreadable db: count unknown, not a crash
    new = snapshot([sandbox]) - before
    cache = str(sandbox / "cache")
    assert {p for p in new if not p.startswith(cache)} == set()
    assert not [p for p in new if "rpmdb" in p]  # the temp copy is gone
    reply = render(facts)
    assert reply.title.endswith("Alpine Linux v3.20 user space")


async def test_config_with_wrong_types_still_gives_facts(
    hostile: HostileRegistry, sandbox: Path
) -> None:
    doc = {
        "architecture": ["amd64"],
        "os": {"linux": 1},
        "config": {
            "Env": "SECRET_TOKEN=abc",
            "User": 1000,
            "Labels": ["a", "b"],
            "ExposedPorts": "80/tcp",
            "Entrypoint": {"x": 1},
            "Cmd": 7,
            "WorkingDir": ["/"],
        },
        "history": {"created_by": "RUN x"},
        "rootfs": "layers",
        "created": 12,
    }
    hostile.image("x/app", "1", [alpine_layer()], doc)
    facts = await facts_of(hostile.host, sandbox)
    assert facts.env == {} and facts.labels == {} and facts.exposed_ports == []
    assert facts.user == "1000" and facts.runs_as_root is False
    assert facts.entrypoint is None and facts.cmd is None
    assert [layer.created_by for layer in facts.layers] == [""]
    assert facts.os is not None and facts.os.id == "alpine"


async def test_untrusted_text_is_bounded_in_the_reply(
    hostile: HostileRegistry, sandbox: Path
) -> None:
    # Sizes stay modest: the redactor's regexes are slow on long runs of word characters
    # (reported to the lead), which is not what this test is about.
    huge = "A" * 600
    history = [{"created_by": f"ENV X{i}=1 {huge[:250]}", "empty_layer": True} for i in range(2000)]
    history.append({"created_by": "RUN " + huge})
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": [f"V{i}={huge}" for i in range(80)] + [f"API_TOKEN_{i}=x" for i in range(40)],
            "Labels": {f"{huge}{i}": huge for i in range(80)},
            "User": huge,
            "Cmd": [huge] * 80,
        },
        "history": history,
        "rootfs": {},
    }
    hostile.image("x/app", "1", [alpine_layer()], doc)
    facts = await facts_of(hostile.host, sandbox)
    assert len(facts.layers) == 2001 and len(facts.labels) == 80  # facts keep everything
    reply = render(facts)
    layers_text = reply.sections[0].body
    assert layers_text.count("\n") == MAX_LAYER_LINES  # 60 lines + "... and N more"
    assert layers_text.endswith(f"and {2001 - MAX_LAYER_LINES} more history entries")
    assert max(len(line) for line in layers_text.splitlines()) < 200
    assert all(len(f.value) <= 200 for f in reply.facts)
    assert len(reply.body) < 2000
    advice = "\n".join(s.body for s in reply.sections[1:])
    assert len(advice) < 5000 and "35 more ENV variables look like secrets" in advice
    data = reply.data
    assert data is not None
    assert len(data["labels"]) <= 50 and len(data["env"]) <= 50 and len(data["cmd"]) <= 50
    assert all(len(k) <= 128 and len(v) <= 512 for k, v in data["labels"].items())
    assert len(data["user"]) <= 512
    assert max(len(layer["created_by"]) for layer in data["layers"]) <= 200
    assert len(json.dumps(data)) < 1_000_000  # 2001 history entries of <= 200 chars


# --------------------------------------------------------------------------- real registry


needs_registry = pytest.mark.skipif(
    shutil.which("docker-registry") is None, reason="docker-registry not installed"
)


@needs_registry
async def test_real_registry_image_with_2000_history_entries_and_odd_config(
    registry: RegistryServer, sandbox: Path
) -> None:
    pusher = registry.pusher()
    layer = make_layer({"etc/os-release": OS_RELEASE, "bin/sh": b"\x7fELF"})
    history: list[Any] = [{"created_by": "ENV A=1", "empty_layer": True}] * 2000
    history.append({"created_by": "/bin/sh -c apk add curl"})
    push_image(
        pusher,
        "hostile/many",
        "1",
        [layer],
        config_extra={
            "history": history,
            "config": {"Env": {"PATH": "/bin"}, "User": 0, "Labels": None},
        },
    )
    facts = await facts_of(registry.host, sandbox, "hostile/many")
    assert len(facts.layers) == 2001 and facts.layers[-1].created_by == "RUN apk add curl"
    assert facts.runs_as_root is True and facts.env == {}
    assert facts.os is not None and facts.os.id == "alpine" and facts.shell is True


@needs_registry
async def test_real_registry_index_nested_too_deep(registry: RegistryServer, sandbox: Path) -> None:
    pusher = registry.pusher()
    image = push_image(pusher, "hostile/nested", None, [make_layer({"a": b"1"})])
    digest, media, size = image.digest, image.media_type, len(image.manifest)
    for level in range(5):
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": media,
                        "digest": digest,
                        "size": size,
                        "platform": {"os": "linux", "architecture": "amd64"},
                    }
                ],
            }
        ).encode()
        digest = pusher.push_manifest("hostile/nested", f"l{level}", body, OCI_INDEX)
        media, size = OCI_INDEX, len(body)
    with pytest.raises(ContentError, match="nests indexes too deeply"):
        await facts_of(registry.host, sandbox, "hostile/nested", "l4")
    one_level = await facts_of(registry.host, sandbox, "hostile/nested", "l0")
    assert one_level.digest is not None and len(one_level.layers) == 1


# --------------------------------------------------------------------------- CLI references


BAD_REFERENCES = [
    "UPPER/case",
    "-rf",
    "a..b",
    "name:",
    "name@",
    "name@sha256:1234",
    "name@md5:" + "a" * 32,
    "name:" + "t" * 200,
    "a" * 300,
    "name@sha256:" + "A" * 64,
    "x/y:tag:tag",
    "image name with spaces",
    "name\x00null",
    "üñí/çødé",
    "/leading/slash",
    "trailing/slash/",
    "x//y",
    "name:tag@sha256:xyz",
    "__/x",
    "$(id)",
]


def run_cli(refs: list[str]) -> list[subprocess.CompletedProcess[str]]:
    env = {**os.environ, "DOCKWISE_CACHE_DIR": tempfile.mkdtemp(prefix="dw-cli-")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bot", "explain", ref],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ref in refs
    ]
    out = []
    for proc, ref in zip(procs, refs, strict=True):
        stdout, stderr = proc.communicate(timeout=120)
        out.append(subprocess.CompletedProcess([ref], proc.returncode, stdout, stderr))
    shutil.rmtree(env["DOCKWISE_CACHE_DIR"], ignore_errors=True)
    return out


def test_cli_rejects_malformed_references_with_one_line() -> None:
    # argv cannot carry NUL; a leading dash is an option to the CLI, not a reference
    # (each CLI start imports the whole bot, ~3 s: a sample here, all of them in-process below)
    refs = [r for r in BAD_REFERENCES if "\x00" not in r and not r.startswith("-")][::3]
    results: list[subprocess.CompletedProcess[str]] = []
    for start in range(0, len(refs), 4):  # 4 at a time: the machine is small
        results += run_cli(refs[start : start + 4])
    for result in results:
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0, result.args
        assert len(lines) == 1, (result.args, result.stderr)
        assert "Traceback" not in result.stderr and lines[0].startswith("dockwise: ")
        assert result.stdout == ""


@pytest.mark.parametrize("ref", BAD_REFERENCES)
async def test_explainer_rejects_malformed_references(ref: str, tmp_path: Path) -> None:
    explainer = Explainer(Settings(cache_dir=tmp_path / "cache"))
    try:
        with pytest.raises(DockwiseError) as caught:
            await explainer.facts(ref, source="registry")
    finally:
        await explainer.aclose()
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "cache" / "tmp").exists()  # nothing downloaded


def test_gzip_fixture_is_a_bomb() -> None:
    bomb = zeros_gzip(b"", 64 * MIB)
    assert len(bomb) < 200_000
    assert len(gzip.decompress(bomb)) == 64 * MIB


class CappedSettings(Settings):
    """Settings as the lead will extend them (DOCKWISE_MAX_*_BYTES)."""

    max_manifest_bytes: int = 4 * MIB
    max_config_bytes: int = 8 * MIB
    max_compressed_bytes: int = 2 * 1024**3


async def test_caps_are_read_from_settings_when_defined(
    hostile: HostileRegistry, sandbox: Path
) -> None:
    hostile.image("x/app", "1", [alpine_layer(), alpine_layer()])
    base: dict[str, Any] = {"cache_dir": sandbox / "cache", "insecure_registries": [hostile.host]}
    ref = f"{hostile.host}/x/app:1"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"max_manifest_bytes": 100}, r"manifest of .* is too large .*100 bytes"),
        ({"max_config_bytes": 20}, r"config of .* is too large .*20 bytes"),
        ({"max_compressed_bytes": len(alpine_layer()) + 1}, r"too large to explain"),
    ]
    for caps, message in cases:
        explainer = Explainer(CappedSettings(**base, **caps))
        try:
            with pytest.raises(ContentError, match=message):
                await explainer.facts(ref, source="registry")
        finally:
            await explainer.aclose()
    explainer = Explainer(CappedSettings(**base))
    try:
        facts = await explainer.facts(ref, source="registry")
    finally:
        await explainer.aclose()
    assert facts.os is not None and facts.os.id == "alpine"


@pytest.mark.timeout(60)
def test_redaction_of_megabytes_of_image_text_is_linear() -> None:
    """Labels and history can be megabytes; the assignment scrubber once rescanned every
    start position of a run of letters (hours for a few MB). Finishing at all is the test."""
    from bot.image.redact import Redactor

    redactor = Redactor(["s3cr3t-value"])
    text = "A" * 4_000_000 + " API_TOKEN=s3cr3t-value " + "b" * 1_000_000
    out = redactor.text(text)
    assert "s3cr3t-value" not in out and len(out) > 5_000_000
