"""DockerSource against the real Docker Engine started by .ci/services (no mocks).

Ground truth comes from the build recipes (tests/fixtures/services.py constants passed as
build arguments) and from the layer bytes themselves (sha256 of each stream == diff id).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from bot.config import Settings
from bot.errors import ContentError, ImageNotFound, InvalidReference, Unreachable
from bot.image.docker_source import DockerSource, _chain_ids, _v1_position
from bot.image.source import LayerBlob, Platform, ResolvedImage
from tests.fixtures.services import (
    APP_CMD,
    APP_ENTRYPOINT,
    APP_HARMLESS_ENV,
    APP_LABELS,
    APP_PORTS,
    APP_SECRET_NAME,
    APP_SECRET_VALUE,
    APP_USER,
    APP_WORKDIR,
    REPO_ROOT,
    WASTE_BYTES,
    WASTE_PATH,
    ImageSet,
    PushedImages,
    connect_engine,
    skopeo_inspect,
)

AMD64 = Platform("linux", "amd64")


def settings(tmp_path: Path) -> Settings:
    return Settings(DOCKWISE_CACHE_DIR=tmp_path / "cache")


async def read_layer(layer: LayerBlob) -> bytes:
    """Whole layer (only for small layers in tests; the source itself never buffers)."""
    return b"".join([chunk async for chunk in layer.open()])


async def layer_members(layer: LayerBlob) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(await read_layer(layer))) as tar:
        return {m.name.removeprefix("./"): m for m in tar.getmembers()}


# --------------------------------------------------------------------------- no engine needed


async def test_no_engine_is_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/missing.sock")
    with pytest.raises(Unreachable) as info:
        await DockerSource(settings(tmp_path)).resolve("debian:bookworm", AMD64)
    assert "\n" not in str(info.value)
    assert "Docker Engine" in str(info.value)


async def test_invalid_reference_is_rejected_before_any_engine_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/missing.sock")
    with pytest.raises(InvalidReference):
        await DockerSource(settings(tmp_path)).resolve("Not A/Ref!!", AMD64)


# --------------------------------------------------------------------------- real engine


@pytest.mark.services
async def test_app_image_config_matches_recipe(test_images: ImageSet, tmp_path: Path) -> None:
    image = await DockerSource(settings(tmp_path)).resolve(test_images.app.name, AMD64)
    assert image.source == "docker"
    assert image.digest == test_images.app.image_id  # never pushed: the image id
    assert image.platform == AMD64 and image.platforms == [AMD64]
    cfg = image.config["config"]
    assert cfg["User"] == APP_USER
    assert cfg["WorkingDir"] == APP_WORKDIR
    assert sorted(cfg["ExposedPorts"]) == sorted(APP_PORTS)
    assert f"{APP_SECRET_NAME}={APP_SECRET_VALUE}" in cfg["Env"]
    assert "=".join(APP_HARMLESS_ENV) in cfg["Env"]
    assert cfg["Entrypoint"] == list(APP_ENTRYPOINT)
    assert cfg["Cmd"] == list(APP_CMD)
    for key, value in APP_LABELS.items():
        assert cfg["Labels"][key] == value
    assert [layer.diff_id for layer in image.layers] == image.config["rootfs"]["diff_ids"]


@pytest.mark.services
async def test_layers_stream_their_exact_bytes_top_down(
    test_images: ImageSet, tmp_path: Path
) -> None:
    image = await DockerSource(settings(tmp_path)).resolve(test_images.app.name, AMD64)
    for layer in reversed(image.layers):  # the order analysis reads them
        digest = hashlib.sha256()
        async for chunk in layer.open():
            digest.update(chunk)
        assert "sha256:" + digest.hexdigest() == layer.diff_id
        assert layer.digest == layer.diff_id and layer.compression == "none"
    spool = tmp_path / "cache" / "docker-spool"
    assert not spool.exists() or not any(spool.rglob("*.tar"))  # read layers are deleted


@pytest.mark.services
async def test_reopening_a_consumed_layer_saves_again(
    test_images: ImageSet, tmp_path: Path
) -> None:
    image = await DockerSource(settings(tmp_path)).resolve(test_images.static.name, AMD64)
    first = await read_layer(image.layers[-1])
    again = await read_layer(image.layers[-1])
    assert first == again and len(first) > 0


@pytest.mark.services
async def test_history_lines_up_with_layers_and_waste(
    test_images: ImageSet, tmp_path: Path
) -> None:
    image = await DockerSource(settings(tmp_path)).resolve(test_images.app.name, AMD64)
    history = image.config["history"]
    with_layers = [h for h in history if not h.get("empty_layer")]
    assert len(with_layers) == len(image.layers)
    # The RUN that wrote the build cache holds the file; the next one holds its whiteout.
    writer = next(i for i, h in enumerate(with_layers) if "head -c" in h["created_by"])
    remover = next(i for i, h in enumerate(with_layers) if "rm /var/tmp" in h["created_by"])
    written = await layer_members(image.layers[writer])
    assert written[WASTE_PATH].size == WASTE_BYTES
    removed = await layer_members(image.layers[remover])
    whiteout = WASTE_PATH.rsplit("/", 1)[0] + "/.wh." + WASTE_PATH.rsplit("/", 1)[1]
    assert whiteout in removed
    assert any("ENV" in h["created_by"] and h.get("empty_layer") for h in history)


@pytest.mark.services
async def test_scratch_image_has_one_layer_with_the_binary(
    test_images: ImageSet, tmp_path: Path
) -> None:
    image = await DockerSource(settings(tmp_path)).resolve(test_images.static.name, AMD64)
    assert len(image.layers) == 1
    members = await layer_members(image.layers[0])
    assert set(members) == {"hello"}
    assert image.config["config"]["Entrypoint"] == ["/hello"]


@pytest.mark.services
async def test_missing_image_is_not_found(test_images: ImageSet, tmp_path: Path) -> None:
    with pytest.raises(ImageNotFound) as info:
        await DockerSource(settings(tmp_path)).resolve("dockwise-test/never-built:1", AMD64)
    assert "not in the local Docker Engine" in str(info.value)


@pytest.mark.services
async def test_other_platform_is_not_found(test_images: ImageSet, tmp_path: Path) -> None:
    with pytest.raises(ImageNotFound) as info:
        await DockerSource(settings(tmp_path)).resolve(
            test_images.static.name, Platform("linux", "arm64")
        )
    assert "linux/amd64" in str(info.value)


@pytest.mark.services
async def test_unread_spool_is_removed_with_the_image(
    test_images: ImageSet, tmp_path: Path
) -> None:
    image: ResolvedImage | None = await DockerSource(settings(tmp_path)).resolve(
        test_images.app.name, AMD64
    )
    assert image is not None
    await read_layer(image.layers[-1])  # the export goes on, writing the unread layers
    spool = tmp_path / "cache" / "docker-spool"
    assert any(spool.iterdir())
    del image
    import gc

    gc.collect()
    assert not any(spool.rglob("*"))


_RSS_PROBE = """
import asyncio, json, resource, sys
from bot.config import Settings
from bot.image.docker_source import DockerSource, _chain_ids, _v1_position
from bot.image.source import Platform

async def main():
    source = DockerSource(Settings(DOCKWISE_CACHE_DIR=sys.argv[2]))
    image = await source.resolve(sys.argv[1], Platform())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    total = 0
    for layer in reversed(image.layers):
        async for chunk in layer.open():
            total += len(chunk)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"bytes": total, "rss_before_kib": before, "rss_after_kib": after}))

asyncio.run(main())
"""


@pytest.mark.services
def test_streaming_keeps_memory_flat(test_images: ImageSet, tmp_path: Path) -> None:
    """Reading the ~200 MB Debian base layer must not grow peak RSS by more than 64 MiB."""
    out = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, test_images.debian.name, str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env=dict(os.environ),
        timeout=240,
    )
    result = json.loads(out.stdout)
    assert result["bytes"] > 100 * 1024 * 1024
    assert result["rss_after_kib"] - result["rss_before_kib"] < 64 * 1024


@pytest.mark.services
@pytest.mark.parametrize("role", ["app", "debian", "static", "distroless", "alpine"])
async def test_engine_view_matches_the_pushed_config(
    role: str, test_images: ImageSet, pushed_images: PushedImages, tmp_path: Path
) -> None:
    """The config the source rebuilds from inspect + history equals the real image config
    (as skopeo reads it from the registry): layers, runtime config, and which history
    entries made a layer."""
    truth = skopeo_inspect(pushed_images.refs[role], "--config")
    image = await DockerSource(settings(tmp_path)).resolve(test_images.all()[role].name, AMD64)
    assert image.config["rootfs"]["diff_ids"] == truth["rootfs"]["diff_ids"]
    for key in ("User", "Env", "ExposedPorts", "Entrypoint", "Cmd", "WorkingDir", "Labels"):
        # absent and empty mean the same (the builder writes "User": "" or leaves it out)
        assert image.config["config"].get(key) == (truth["config"].get(key) or None), key
    assert image.config["architecture"] == truth["architecture"]
    assert image.config["os"] == truth["os"]
    ours = [(h.get("created_by", ""), bool(h.get("empty_layer"))) for h in image.config["history"]]
    real = [(h.get("created_by", ""), bool(h.get("empty_layer"))) for h in truth["history"]]
    assert ours == real


@pytest.mark.services
async def test_a_waiting_reader_gets_its_layer_straight_from_the_export(
    test_images: ImageSet, tmp_path: Path
) -> None:
    """The export is not spooled to disk first: a layer whose reader is waiting streams
    straight to it (here the Debian base, the bottom layer, known by its parentless json
    before its bytes arrive); nothing is written while it streams."""
    image = await DockerSource(settings(tmp_path)).resolve(test_images.debian.name, AMD64)
    spool = tmp_path / "cache" / "docker-spool"
    bottom = image.layers[0]
    digest = hashlib.sha256()
    written: list[int] = []
    async for chunk in bottom.open():
        digest.update(chunk)
        written.append(sum(p.stat().st_size for p in spool.rglob("*.tar")))
    assert "sha256:" + digest.hexdigest() == bottom.diff_id
    assert len(written) > 100 and max(written) == 0


def _read_blocking(
    layer: LayerBlob,
    stop: threading.Event,
    spool: Path | None = None,
    seen: list[int] | None = None,
) -> str:
    """sha256 of a layer read through ``open_blocking``; ``seen`` collects the bytes in
    the ``spool`` dir after each chunk."""
    assert layer.open_blocking is not None
    digest = hashlib.sha256()
    for chunk in layer.open_blocking(stop):
        digest.update(chunk)
        if spool is not None and seen is not None:
            seen.append(sum(p.stat().st_size for p in spool.rglob("*.tar")))
    return "sha256:" + digest.hexdigest()


@pytest.mark.services
async def test_blocking_readers_of_every_layer_at_once_get_their_exact_bytes(
    test_images: ImageSet, tmp_path: Path
) -> None:
    """What analysis does with the engine: one thread per layer, all started together,
    fed by one export in the engine's order (each stream's sha256 is its diff id). Every
    layer is known before its bytes arrive (the legacy layout's v1 ids are recomputed), so
    with every reader waiting nothing is written to disk."""
    image = await DockerSource(settings(tmp_path)).resolve(test_images.app.name, AMD64)
    assert len(image.layers) > 2
    spool = tmp_path / "cache" / "docker-spool"
    spool.mkdir(parents=True)
    stop = threading.Event()
    spooled: list[int] = []
    digests = await asyncio.gather(
        *(asyncio.to_thread(_read_blocking, layer, stop, spool, spooled) for layer in image.layers)
    )
    assert digests == [layer.diff_id for layer in image.layers]
    assert len(spooled) > len(image.layers) and max(spooled) == 0


@pytest.mark.services
async def test_a_stopped_blocking_reader_gives_up_and_frees_the_export(
    test_images: ImageSet, tmp_path: Path
) -> None:
    """A reader that gives up mid-layer (a cancelled scan) ends with ContentError at its
    next chunk; the export goes on for the others."""
    image = await DockerSource(settings(tmp_path)).resolve(test_images.debian.name, AMD64)
    bottom = image.layers[0]
    assert bottom.open_blocking is not None
    stop = threading.Event()
    chunks = bottom.open_blocking(stop)
    first = await asyncio.to_thread(next, chunks)
    assert first
    stop.set()
    with pytest.raises(ContentError):
        await asyncio.to_thread(list, chunks)
    again = await DockerSource(settings(tmp_path)).resolve(test_images.debian.name, AMD64)
    assert await asyncio.to_thread(_read_blocking, again.layers[0], threading.Event()) == (
        bottom.diff_id
    )


@pytest.mark.services
@pytest.mark.parametrize("role", ["app", "debian", "static"])
def test_every_legacy_layer_directory_is_placed_by_its_json(
    role: str, test_images: ImageSet
) -> None:
    """The legacy archive's ``<v1 id>/json`` alone names the layer it holds (recomputed v1
    id), checked against the archive's own manifest.json order. OCI-layout engines name
    layers by diff id: nothing to check there."""
    image = test_images.all()[role]
    client = connect_engine()
    raw = b"".join(client.api.get_image(image.name))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = tar.getnames()
        if "oci-layout" in names and not any(n.endswith("/json") for n in names):
            pytest.skip("this engine exports the OCI layout")
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        diff_ids = client.images.get(image.name).attrs["RootFS"]["Layers"]
        chains = _chain_ids(diff_ids)
        for index, layer in enumerate(manifest[0]["Layers"]):
            v1_id = layer.split("/", 1)[0]
            data = tar.extractfile(f"{v1_id}/json").read()  # type: ignore[union-attr]
            assert _v1_position(v1_id, data, chains) == index, (role, index)
        assert _v1_position("0" * 64, data, chains) is None
        assert _v1_position(v1_id, b"not json", chains) is None
