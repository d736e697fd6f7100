"""Explainer with its default sources against a real registry (Debian's docker-registry):
the registry source, the SSRF guard (the loopback registry is trusted via
DOCKWISE_INSECURE_REGISTRIES), the manifest cache and layer analysis, end to end."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from bot.config import Settings
from bot.errors import ContentError, Forbidden, ImageNotFound
from bot.image.explain import Explainer
from bot.image.source import Platform
from bot.reply import ReplyKind
from tests.fixtures.image_layers import file, sized, sym, tar_bytes
from tests.fixtures.registry import RegistryServer, push_image, push_index

pytestmark = pytest.mark.skipif(
    shutil.which("docker-registry") is None, reason="docker-registry not installed"
)

OS_RELEASE = 'ID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME="Alpine Linux v3.20"\n'


def layer(members: list) -> bytes:  # type: ignore[type-arg]
    return gzip.compress(tar_bytes(members), mtime=0)


async def test_multi_platform_image_from_a_real_registry(
    registry: RegistryServer, tmp_path: Path
) -> None:
    pusher = registry.pusher()
    base = layer(
        [
            file("etc/os-release", OS_RELEASE),
            file("lib/apk/db/installed", "P:musl\nV:1\n\nP:busybox\nV:1\n\n"),
            file("bin/busybox", b"\x7fELF"),
            sym("bin/sh", "/bin/busybox"),
        ]
    )
    app = layer([sized("srv/app", 5000)])
    images = [
        push_image(pusher, "dw/multi", None, [base, app], platform=p)
        for p in ("linux/amd64", "linux/arm64")
    ]
    index_digest = push_index(pusher, "dw/multi", "1", images)
    settings = Settings(cache_dir=tmp_path / "cache", insecure_registries=[registry.host])
    explainer = Explainer(settings)
    try:
        reference = f"{registry.host}/dw/multi:1"
        reply = await explainer.explain(
            reference, source="registry", platform=Platform("linux", "arm64")
        )
        assert reply.kind == ReplyKind.IMAGE and reply.data is not None
        facts = reply.data
        assert facts["source"] == "registry"
        assert facts["digest"] == index_digest
        assert sorted(facts["platforms"]) == ["linux/amd64", "linux/arm64"]
        assert facts["platform"] == "linux/arm64"
        assert [lf["digest"] for lf in facts["layers"]] == images[1].layer_digests
        assert facts["os"]["id"] == "alpine"
        assert facts["packages"] == {
            "manager": "apk",
            "count": 2,
            "database": "/lib/apk/db/installed",
        }
        assert facts["shell"] is True
        assert facts["size"]["compressed"] == len(base) + len(app)
        assert facts["size"]["uncompressed"] == sum(len(gzip.decompress(b)) for b in (base, app))
        with pytest.raises(ImageNotFound):
            await explainer.facts(f"{registry.host}/dw/never-pushed:1", source="registry")
    finally:
        await explainer.aclose()


async def test_untrusted_loopback_registry_is_refused(
    registry: RegistryServer, tmp_path: Path
) -> None:
    explainer = Explainer(Settings(cache_dir=tmp_path / "cache"))
    try:
        with pytest.raises(Forbidden):
            await explainer.facts(f"{registry.host}/dw/multi:1", source="registry")
    finally:
        await explainer.aclose()


async def test_unpacked_budget_from_settings_stops_an_oversized_image(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """DOCKWISE_MAX_UNCOMPRESSED_BYTES bounds one explanation across all its layers: two
    layers of 600 KB each pass a 1 MB per-layer cap but not a 1 MB total."""
    pusher = registry.pusher()
    layers = [layer([sized(f"srv/blob{i}", 600_000)]) for i in range(2)]
    push_image(pusher, "dw/budget", "1", layers)
    reference = f"{registry.host}/dw/budget:1"
    small = Settings(
        cache_dir=tmp_path / "small",
        insecure_registries=[registry.host],
        max_uncompressed_bytes=1_000_000,
    )
    explainer = Explainer(small)
    try:
        with pytest.raises(ContentError, match="too large"):
            await explainer.facts(reference, source="registry")
    finally:
        await explainer.aclose()
    roomy = Explainer(Settings(cache_dir=tmp_path / "roomy", insecure_registries=[registry.host]))
    try:
        facts = await roomy.facts(reference, source="registry")
        assert facts.to_json()["size"]["uncompressed"] > 1_200_000
    finally:
        await roomy.aclose()


async def test_metrics_count_bytes_fetched_and_layer_cache_hits(
    registry: RegistryServer, tmp_path: Path
) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    pusher = registry.pusher()
    blob = layer([sized("srv/data", 70_000)])
    push_image(pusher, "dw/metrics", "1", [blob])
    settings = Settings(cache_dir=tmp_path / "cache", insecure_registries=[registry.host])
    before_bytes = sample("dockwise_bytes_fetched_total", source="registry")
    before_hits = sample("dockwise_cache_hits_total", cache="layer")
    before_misses = sample("dockwise_cache_misses_total", cache="layer")
    for _ in range(2):  # fresh explainers on one cache dir: the second reads the cache
        explainer = Explainer(settings)
        try:
            await explainer.facts(f"{registry.host}/dw/metrics:1", source="registry")
        finally:
            await explainer.aclose()
    assert sample("dockwise_bytes_fetched_total", source="registry") - before_bytes == len(blob)
    assert sample("dockwise_cache_misses_total", cache="layer") - before_misses >= 1
    assert sample("dockwise_cache_hits_total", cache="layer") - before_hits >= 1


async def test_concurrent_requests_for_one_image_share_it_instead_of_being_busy(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """Admission allows 2 running + 8 waiting explanations; 20 people asking for the same
    image at once all get it, because later askers join the explanation in flight."""
    import asyncio

    from bot.engine import Asker, Engine
    from bot.knowledge import KnowledgeBase

    pusher = registry.pusher()
    push_image(pusher, "dw/popular", "1", [layer([file("etc/os-release", OS_RELEASE)])])
    settings = Settings(cache_dir=tmp_path / "cache", insecure_registries=[registry.host])
    engine = Engine(knowledge=KnowledgeBase.load(), explainer=Explainer(settings))
    try:
        replies = await asyncio.gather(
            *(
                engine.explain(
                    f"{registry.host}/dw/popular:1", asker=Asker("slack", f"U{i}", f"C{i}")
                )
                for i in range(20)
            )
        )
    finally:
        await engine.aclose()
    assert [r.kind for r in replies] == [ReplyKind.IMAGE] * 20
    assert len(engine._explaining) == 0  # nothing left in flight
