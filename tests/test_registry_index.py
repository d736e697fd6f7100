"""Index entries written without ``platform`` (issue 11, item 10): their platform is the one
their image config declares, as skopeo reads them. A hand-made OCI index is pushed to a
real ``docker-registry``."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from bot.config import Settings
from bot.errors import ImageNotFound
from bot.image.explain import Explainer
from bot.image.source import Platform
from tests.fixtures.image_layers import file, tar_bytes
from tests.fixtures.registry import OCI_INDEX, RegistryServer, push_image

pytestmark = pytest.mark.skipif(
    shutil.which("docker-registry") is None, reason="docker-registry not installed"
)


def _layer(arch: str) -> bytes:
    return gzip.compress(tar_bytes([file("etc/os-release", f"ID=built-for-{arch}\n")]), mtime=0)


async def test_index_entries_without_platform_are_read_as_their_config_declares(
    registry: RegistryServer, tmp_path: Path
) -> None:
    pusher = registry.pusher()
    repo = "index/no-platform"
    images = {
        plat: push_image(pusher, repo, None, [_layer(plat)], platform=plat)
        for plat in ("linux/amd64", "linux/arm64/v8")
    }
    # An artifact (not a container image config) without platform: not a variant.
    artifact_config = b"{}"
    artifact_config_digest = pusher.push_blob(repo, artifact_config)
    artifact = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.sbom",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": artifact_config_digest,
                "size": len(artifact_config),
            },
            "layers": [],
        }
    ).encode()
    artifact_digest = pusher.push_manifest(
        repo, "sbom", artifact, "application/vnd.oci.image.manifest.v1+json"
    )
    entries = [
        {"mediaType": i.media_type, "digest": i.digest, "size": len(i.manifest)}
        for i in images.values()
    ]  # no "platform" keys, as some hand-rolled tools write them
    entries.append(
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": artifact_digest,
            "size": len(artifact),
        }
    )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    index_digest = pusher.push_manifest(repo, "1", index.encode(), OCI_INDEX)

    explainer = Explainer(
        Settings(cache_dir=tmp_path / "cache", insecure_registries=[registry.host])
    )
    reference = f"{registry.host}/{repo}:1"
    try:
        for wanted, expected in (
            (Platform("linux", "arm64"), "linux/arm64/v8"),
            (Platform("linux", "amd64"), "linux/amd64"),
        ):
            facts = (await explainer.facts(reference, source="registry", platform=wanted)).to_json()
            assert facts["digest"] == index_digest
            assert facts["platform"] == expected
            assert sorted(facts["platforms"]) == ["linux/amd64", "linux/arm64/v8"]
            assert [lf["digest"] for lf in facts["layers"] if not lf["empty"]] == images[
                expected
            ].layer_digests
            assert facts["os"]["id"] == f"built-for-{expected}"
        with pytest.raises(ImageNotFound, match=r"available: linux/amd64, linux/arm64/v8"):
            await explainer.facts(reference, source="registry", platform=Platform("linux", "s390x"))
    finally:
        await explainer.aclose()
