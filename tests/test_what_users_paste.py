"""What users paste into chat (issue 11, item 14): Docker Hub page addresses, chat
auto-links, pasted ``docker pull`` commands, image IDs for the engine, a digest that does
not match its tag, and a loopback registry refused with the exact setting that allows it.

Expectations are written out by hand from how Docker Hub, Slack and the docker CLI name
images; the registry cases run against a real ``docker-registry`` and the image-ID cases
against the real Docker Engine of ``.ci/services``.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from docker.client import DockerClient

from bot.config import Settings
from bot.errors import Forbidden, ImageNotFound, InvalidReference
from bot.image.explain import Explainer
from bot.image.reference import from_paste, parse_reference
from bot.intent import ExplainIntent, parse_intent
from tests.fixtures.image_layers import file, tar_bytes
from tests.fixtures.registry import RegistryServer, push_image
from tests.fixtures.services import ImageSet

needs_registry = pytest.mark.skipif(
    shutil.which("docker-registry") is None, reason="docker-registry not installed"
)


@pytest.mark.parametrize(
    ("pasted", "reference"),
    [
        ("https://hub.docker.com/_/nginx", "nginx"),
        ("https://hub.docker.com/_/nginx/tags?name=1.27", "nginx"),
        ("hub.docker.com/_/python", "python"),
        ("https://hub.docker.com/r/bitnami/redis", "bitnami/redis"),
        ("https://hub.docker.com/r/bitnami/redis/tags", "bitnami/redis"),
        ("https://hub.docker.com/layers/library/nginx/1.27/images/sha256-0f04e4f6", "nginx:1.27"),
        ("docker pull nginx:1.27", "nginx:1.27"),
        ("`docker pull nginx:1.27`", "nginx:1.27"),
        ("sudo docker image pull --platform linux/arm64 ghcr.io/o/app:2", "ghcr.io/o/app:2"),
        ("docker run --rm -it -p 8080:80 -e A=b nginx:alpine sh", "nginx:alpine"),
        ("podman pull quay.io/podman/stable", "quay.io/podman/stable"),
        ("<http://registry.lan/team/app|registry.lan/team/app>", "registry.lan/team/app"),
        ("<https://ghcr.io/o/app:1>", "ghcr.io/o/app:1"),
        ("https://quay.io/repository/prometheus/node-exporter", "quay.io/prometheus/node-exporter"),
        ("https://github.com/Org/tool/pkgs/container/tool", "ghcr.io/org/tool"),
        ("  'python:3.12-slim'  ", "python:3.12-slim"),
    ],
)
def test_pasted_text_becomes_the_reference(pasted: str, reference: str) -> None:
    assert from_paste(pasted) == reference
    parse_reference(reference)  # and it is a valid reference


@pytest.mark.parametrize(
    ("pasted", "fix"),
    [
        ("docker build -t app .", "paste just the image"),
        ("docker pull --quiet", "names no image"),
        ("https://hub.docker.com/search?q=redis", "paste the image name"),
        ("https://registry.lan/", "add the repository"),
    ],
)
def test_pasted_text_without_an_image_gets_the_fix(pasted: str, fix: str) -> None:
    with pytest.raises(InvalidReference, match=fix) as caught:
        from_paste(pasted)
    assert "\n" not in str(caught.value)


def test_image_ids_are_refused_as_registry_names_with_the_fix() -> None:
    for text in ("sha256:" + "ab" * 32, "ab" * 32):
        with pytest.raises(InvalidReference, match="--source docker"):
            parse_reference(text)


@pytest.mark.parametrize(
    ("message", "reference"),
    [
        ("explain https://hub.docker.com/_/nginx", "nginx"),
        ("https://hub.docker.com/r/bitnami/redis", "bitnami/redis"),
        ("docker pull nginx:1.27", "nginx:1.27"),
        ("explain docker pull nginx:1.27", "nginx:1.27"),
        ("explain `docker pull nginx:1.27`", "nginx:1.27"),
        ("explain <http://registry.lan/x|registry.lan/x>", "registry.lan/x"),
        ("what's in https://hub.docker.com/_/python?", "python"),
    ],
)
def test_chat_messages_with_pasted_images_are_explain_requests(
    message: str, reference: str
) -> None:
    assert parse_intent(message) == ExplainIntent(reference)


def _layer() -> bytes:
    return gzip.compress(tar_bytes([file("etc/os-release", "ID=pasted\n")]), mtime=0)


@needs_registry
async def test_pasted_pull_command_and_chat_link_explain_a_real_registry_image(
    registry: RegistryServer, tmp_path: Path
) -> None:
    pushed = push_image(registry.pusher(), "paste/app", "1", [_layer()])
    explainer = Explainer(
        Settings(cache_dir=tmp_path / "cache", insecure_registries=[registry.host])
    )
    try:
        for pasted in (
            f"docker pull {registry.host}/paste/app:1",
            f"<http://{registry.host}/paste/app:1|{registry.host}/paste/app:1>",
        ):
            facts = (await explainer.facts(pasted, source="registry")).to_json()
            assert facts["digest"] == pushed.digest
            assert facts["os"]["id"] == "pasted"
    finally:
        await explainer.aclose()


@needs_registry
async def test_a_digest_that_does_not_match_its_tag_says_so(
    registry: RegistryServer, tmp_path: Path
) -> None:
    pusher = registry.pusher()
    current = push_image(pusher, "paste/moved", "1.27", [_layer()])
    other = push_image(pusher, "paste/other", "1", [gzip.compress(tar_bytes([]), mtime=0)])
    explainer = Explainer(
        Settings(cache_dir=tmp_path / "cache", insecure_registries=[registry.host])
    )
    name = f"{registry.host}/paste/moved"
    try:
        with pytest.raises(ImageNotFound) as caught:
            await explainer.facts(f"{name}:1.27@{other.digest}", source="registry")
        message = str(caught.value)
        assert "1.27 exists" in message
        assert current.digest in message and other.digest in message
        with pytest.raises(ImageNotFound, match="neither the tag nor the digest"):
            await explainer.facts(f"{name}:9.9@{other.digest}", source="registry")
        with pytest.raises(ImageNotFound, match=f"no image with digest {other.digest}"):
            await explainer.facts(f"{name}@{other.digest}", source="registry")
        facts = await explainer.facts(f"{name}:1.27@{current.digest}", source="registry")
        assert facts.to_json()["digest"] == current.digest
    finally:
        await explainer.aclose()


@needs_registry
async def test_localhost_registry_is_refused_with_the_setting_that_allows_it(
    registry: RegistryServer, tmp_path: Path
) -> None:
    push_image(registry.pusher(), "paste/local", "1", [_layer()])
    port = registry.host.rsplit(":", 1)[1]
    reference = f"localhost:{port}/paste/local:1"
    refusing = Explainer(Settings(cache_dir=tmp_path / "a"))
    try:
        with pytest.raises(Forbidden) as caught:
            await refusing.facts(reference, source="registry")
    finally:
        await refusing.aclose()
    message = str(caught.value)
    assert "\n" not in message
    assert f"DOCKWISE_INSECURE_REGISTRIES=localhost:{port}" in message
    # Doing exactly what the message says makes it work.
    allowed = Explainer(
        Settings(cache_dir=tmp_path / "b", insecure_registries=[f"localhost:{port}"])
    )
    try:
        facts = (await allowed.facts(reference, source="registry")).to_json()
        assert facts["os"]["id"] == "pasted"
    finally:
        await allowed.aclose()


@pytest.mark.services
async def test_image_ids_are_found_in_the_engine_as_docker_inspect_finds_them(
    test_images: ImageSet, docker_client: DockerClient, tmp_path: Path
) -> None:
    image = test_images.static
    full = image.image_id  # sha256:<64 hex>
    tags = {str(parse_reference(t)) for t in docker_client.images.get(full).tags}
    assert str(parse_reference(image.name)) in tags
    explainer = Explainer(Settings(cache_dir=tmp_path / "cache"))
    try:
        for text in (full, full.removeprefix("sha256:"), full.removeprefix("sha256:")[:12]):
            facts = (await explainer.facts(text, source="docker")).to_json()
            assert facts["source"] == "docker"
            assert facts["reference"] in tags  # named by one of its tags
            assert len([lf for lf in facts["layers"] if not lf["empty"]]) == 1
        with pytest.raises(ImageNotFound, match="registries know images by name"):
            await explainer.facts("sha256:" + "0" * 64, source="auto")
        with pytest.raises(InvalidReference, match="--source docker"):
            await explainer.facts(full, source="registry")
    finally:
        await explainer.aclose()
