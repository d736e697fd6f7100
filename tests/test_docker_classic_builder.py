"""Docker Engine source with images from the classic builder (issue 11, item 9): a
``WORKDIR`` that creates its directory is a real (nearly empty) layer; history must line
up with layers as the image config's ``empty_layer`` flags say, with no phantom entry.

Built with DOCKER_BUILDKIT=0 on the real dockerd of ``.ci/services``; the ground truth is
the image's own config, read by the test from ``docker save`` with the standard library.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from docker.client import DockerClient

from bot.config import Settings
from bot.image.docker_source import DockerSource
from bot.image.explain import Explainer
from bot.image.source import Platform
from tests.fixtures.services import ImageSet

pytestmark = pytest.mark.services

DOCKERFILE = """\
FROM {base}
WORKDIR /srv/app
COPY payload.bin /srv/app/payload.bin
WORKDIR /srv/app
ENV MODE=demo
RUN ["/hello"]
"""
PAYLOAD = 3000


def saved_config(image: str) -> dict[str, Any]:
    """The image config from ``docker save`` (its sha256 is the image ID)."""
    data = subprocess.run(["docker", "save", image], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        return json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[no-any-return,arg-type]


def classic_build(tag: str, base: str, context: Path) -> None:
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (context / "payload.bin").write_bytes(os.urandom(PAYLOAD))
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, str(context)],
        check=True,
        capture_output=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )


def docker(*args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["docker", *args], input=data, check=True, capture_output=True).stdout


def reload_without_parents(built: str, loaded: str) -> None:
    """Save, remove and load ``built`` as ``loaded``: a loaded image keeps no parents."""
    archive = docker("save", built)
    docker("rmi", built)
    docker("load", "-q", data=archive)
    docker("tag", built, loaded)
    docker("rmi", built)


def expected_layers(config: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(h["created_by"], bool(h.get("empty_layer"))) for h in config["history"]]


async def test_workdir_layer_from_the_classic_builder_lines_up(
    test_images: ImageSet, docker_client: DockerClient, tmp_path: Path
) -> None:
    tag = "dockwise-test/classic-workdir:1"
    classic_build(tag, test_images.static.name, tmp_path / "ctx")
    truth = saved_config(tag)
    flags = [bool(h.get("empty_layer")) for h in truth["history"]]
    workdirs = [i for i, h in enumerate(truth["history"]) if "WORKDIR" in h["created_by"]]
    assert [flags[i] for i in workdirs] == [False, True]  # the builder's own verdict

    # Before any layer is read: aligned from the intermediate images' layer counts.
    source = DockerSource(Settings(DOCKWISE_CACHE_DIR=tmp_path / "c1"))
    try:
        resolved = await source.resolve(tag, Platform("linux", "amd64"))
    finally:
        await source.aclose()
    got = [bool(h.get("empty_layer")) for h in resolved.config["history"]]
    assert got == flags

    # End to end: sizes land on their own instruction, no "(no history)" entry.
    explainer = Explainer(Settings(cache_dir=tmp_path / "c2"))
    try:
        facts = (await explainer.facts(tag, source="docker")).to_json()
    finally:
        await explainer.aclose()
    layers = facts["layers"]
    assert len(layers) == len(truth["history"])
    assert [lf["empty"] for lf in layers] == flags
    assert all(lf["created_by"] for lf in layers)
    copy = next(lf for lf in layers if "payload.bin" in lf["created_by"])
    assert PAYLOAD <= copy["size"] < PAYLOAD + 4096
    first_workdir = layers[workdirs[0]]
    assert not first_workdir["empty"] and first_workdir["size"] < 4096
    run = layers[-1]
    assert run["empty"] and run["size"] == 0


async def test_without_intermediate_images_the_saved_config_aligns_history(
    test_images: ImageSet, docker_client: DockerClient, tmp_path: Path
) -> None:
    """A loaded image has no intermediate images (history ``Id`` is ``<missing>``): the
    image's own config, read from the same export that streams the layers, decides."""
    built = "dockwise-test/classic-loaded-src:1"
    loaded = "dockwise-test/classic-loaded:1"
    classic_build(built, test_images.static.name, tmp_path / "ctx")
    truth = saved_config(built)
    reload_without_parents(built, loaded)
    history = docker_client.images.get(loaded).history()
    missing = [h["Id"] for h in history][1:]
    assert missing and set(missing) == {"<missing>"}
    explainer = Explainer(Settings(cache_dir=tmp_path / "c"))
    try:
        facts = (await explainer.facts(loaded, source="docker")).to_json()
    finally:
        await explainer.aclose()
    assert [(lf["empty"]) for lf in facts["layers"]] == [
        empty for _, empty in expected_layers(truth)
    ]
    assert all(lf["created_by"] for lf in facts["layers"])
