"""``--source auto`` reads from a registry when the engine's RepoDigests name the same
image there (issue 11, item 13): same layers, fewer bytes. Real dockerd (``.ci/services``)
pushing to a real ``docker-registry``; dockerd treats loopback registries as insecure, so
``docker push`` to 127.0.0.1 records the RepoDigest as it would for any registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from docker.client import DockerClient

from bot.config import Settings
from bot.image.explain import Explainer
from tests.fixtures.registry import RegistryServer
from tests.fixtures.services import ImageSet

pytestmark = [
    pytest.mark.services,
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="no docker-registry"),
]


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], check=True, capture_output=True, text=True, env=dict(os.environ)
    ).stdout


def delete_manifest(registry: RegistryServer, repo: str, digest: str) -> None:
    request = urllib.request.Request(
        f"{registry.url}/v2/{repo}/manifests/{digest}", method="DELETE"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


async def test_auto_reads_the_registry_copy_the_engine_names(
    test_images: ImageSet, docker_client: DockerClient, registry: RegistryServer, tmp_path: Path
) -> None:
    pushed = f"{registry.host}/auto/app:1"
    docker("tag", test_images.alpine.name, pushed)
    docker("push", pushed)
    repo_digests = docker_client.images.get(pushed).attrs["RepoDigests"]
    digest = next(d for d in repo_digests if d.startswith(f"{registry.host}/auto/app@"))
    digest = digest.split("@", 1)[1]
    engine_layers = docker_client.images.get(pushed).attrs["RootFS"]["Layers"]

    trusted = Settings(cache_dir=tmp_path / "t", insecure_registries=[registry.host])
    explainer = Explainer(trusted)
    try:
        facts = (await explainer.facts(test_images.alpine.name, source="auto")).to_json()
        direct = (await explainer.facts(test_images.alpine.name, source="docker")).to_json()
    finally:
        await explainer.aclose()
    assert facts["source"] == "registry"
    assert facts["digest"] == digest
    assert len([lf for lf in facts["layers"] if not lf["empty"]]) == len(engine_layers)
    # The same facts as reading the engine itself (only where they came from differs).
    for key in ("os", "packages", "user", "shell", "env"):
        assert facts[key] == direct[key], key
    assert facts["size"]["uncompressed"] == direct["size"]["uncompressed"]

    # Not allowed (guard), not on the allowlist, or gone from the registry: the engine.
    for settings in (
        Settings(cache_dir=tmp_path / "g"),
        Settings(
            cache_dir=tmp_path / "a",
            insecure_registries=[registry.host],
            registry_allowlist=["ghcr.io"],
        ),
    ):
        other = Explainer(settings)
        try:
            assert (await other.facts(test_images.alpine.name, source="auto")).source == "docker"
        finally:
            await other.aclose()
    delete_manifest(registry, "auto/app", digest)
    gone = Explainer(Settings(cache_dir=tmp_path / "d", insecure_registries=[registry.host]))
    try:
        assert (await gone.facts(test_images.alpine.name, source="auto")).source == "docker"
    finally:
        await gone.aclose()


async def test_auto_falls_back_to_the_engine_when_that_registry_is_down(
    test_images: ImageSet, docker_client: DockerClient, tmp_path: Path
) -> None:
    from tests.fixtures.registry import start_registry

    gone = start_registry(tmp_path / "registry")
    pushed = f"{gone.host}/auto/down:1"
    try:
        docker("tag", test_images.static.name, pushed)
        docker("push", pushed)
    finally:
        gone.stop()  # the engine still names it in RepoDigests
    assert any(
        d.startswith(gone.host) for d in docker_client.images.get(pushed).attrs["RepoDigests"]
    )
    explainer = Explainer(Settings(cache_dir=tmp_path / "c", insecure_registries=[gone.host]))
    try:
        for _ in range(2):  # the second time the dead registry is not asked again
            facts = await explainer.facts(pushed, source="auto")
            assert facts.source == "docker"
    finally:
        await explainer.aclose()
        docker("rmi", pushed)
