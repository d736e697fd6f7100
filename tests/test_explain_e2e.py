"""End to end: the real `dockwise explain` CLI against real images in a real registry and a
real Docker Engine, checked against ground truth that does not come from dockwise:

- OS and package counts from the debootstrap tree (``dpkg-query --admindir``) and from the
  trees the fixtures wrote (status.d files, the apk database);
- digests, layers and platforms from ``skopeo inspect --raw / --config``;
- user, env, ports, labels and wasted bytes from the build recipes (tests/images/);
- downloads counted by a proxy in front of the registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.services import (
    ALPINE_PACKAGES,
    ALPINE_VERSION,
    APP_CMD,
    APP_ENTRYPOINT,
    APP_HARMLESS_ENV,
    APP_LABELS,
    APP_PORTS,
    APP_SECRET_NAME,
    APP_SECRET_VALUE,
    APP_USER,
    APP_WORKDIR,
    DISTROLESS_PACKAGES,
    NONROOT_UID,
    REPO_ROOT,
    WASTE_BYTES,
    CountingProxy,
    ImageSet,
    PushedImages,
    require_services,
    skopeo_inspect,
)

pytestmark = pytest.mark.services


@pytest.fixture(autouse=True)
def _services() -> None:
    require_services()


def dockwise(
    *args: str, cache: Path, insecure: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DOCKWISE_CACHE_DIR": str(cache),
        "DOCKWISE_INSECURE_REGISTRIES": insecure,
        **(extra_env or {}),
    }
    env.pop("DOCKWISE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=240,
    )


def explain_json(
    ref: str,
    *,
    cache: Path,
    insecure: str,
    source: str = "registry",
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    result = dockwise(
        "explain", ref, "--json", "--source", source, *extra, cache=cache, insecure=insecure
    )
    assert result.returncode == 0, result.stderr
    facts: dict[str, Any] = json.loads(result.stdout)
    return facts


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr


def registry_truth(ref: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(manifest, config, manifest digest) from skopeo."""
    manifest = skopeo_inspect(ref, "--raw")
    config = skopeo_inspect(ref, "--config")
    digest = skopeo_inspect(ref)["Digest"]
    return manifest, config, digest


# --------------------------------------------------------------------------- facts accessors
# One place that knows the shape of `explain --json` (bot/image/explain.py ImageFacts).


def f_os_id(facts: dict[str, Any]) -> str | None:
    os_ = facts.get("os")
    return os_.get("id") if os_ else None


def f_os_version(facts: dict[str, Any]) -> str | None:
    os_ = facts.get("os")
    return os_.get("version_id") if os_ else None


def f_os_pretty(facts: dict[str, Any]) -> str | None:
    os_ = facts.get("os")
    return os_.get("pretty_name") if os_ else None


def f_packages(facts: dict[str, Any]) -> tuple[str | None, int]:
    packages = facts.get("packages") or {}
    return packages.get("manager"), int(packages.get("count") or 0)


def f_shell(facts: dict[str, Any]) -> bool:
    return bool(facts["shell"])


def f_layer_digests(facts: dict[str, Any]) -> list[str]:
    """Digests of the filesystem layers (history entries that made one), bottom to top."""
    return [layer["digest"] for layer in facts["layers"] if not layer["empty"]]


# --------------------------------------------------------------------------- tests


def test_debian_base_matches_debootstrap(
    pushed_images: PushedImages, test_images: ImageSet, tmp_path: Path
) -> None:
    ref = pushed_images.refs["debian"]
    facts = explain_json(ref, cache=tmp_path, insecure=pushed_images.registry.host)
    manifest, config, digest = registry_truth(ref)
    os_release = (test_images.debian.rootfs / "etc/os-release").read_text()
    truth = dict(line.split("=", 1) for line in os_release.splitlines() if "=" in line)
    assert f_os_id(facts) == truth["ID"].strip('"')
    assert f_os_version(facts) == truth["VERSION_ID"].strip('"')
    manager, count = f_packages(facts)
    assert manager == "dpkg"
    assert count == len(test_images.debian.dpkg_packages())
    assert f_shell(facts) is True
    assert facts["scratch"] is False
    assert facts["digest"] == digest
    assert f_layer_digests(facts) == [layer["digest"] for layer in manifest["layers"]]
    assert facts["platform"] == f"{config['os']}/{config['architecture']}"
    assert facts["source"] == "registry"


JSON_KEYS = {
    "reference",
    "source",
    "digest",
    "platform",
    "platforms",
    "created",
    "os",
    "scratch",
    "packages",
    "shell",
    "user",
    "runs_as_root",
    "entrypoint",
    "cmd",
    "workdir",
    "exposed_ports",
    "env",
    "labels",
    "base_image",
    "layers",
    "size",
    "wasted_bytes",
    "advice",
    "text",
}
# Added by issue 11 (the keys above keep their names and meaning).
JSON_KEYS_ISSUE_11 = {"uid", "gid", "secrets", "runtimes", "userspace", "base_match"}


def test_app_image_matches_recipe(pushed_images: PushedImages, tmp_path: Path) -> None:
    ref = pushed_images.refs["app"]
    host = pushed_images.registry.host
    result = dockwise(
        "explain", ref, "--json", "--source", "registry", cache=tmp_path, insecure=host
    )
    assert result.returncode == 0, result.stderr
    assert APP_SECRET_VALUE not in result.stdout + result.stderr
    facts = json.loads(result.stdout)
    assert set(facts) == JSON_KEYS | JSON_KEYS_ISSUE_11  # the exact `explain --json` contract
    assert all(set(layer) == {"digest", "size", "created_by", "empty"} for layer in facts["layers"])
    manifest, _config, digest = registry_truth(ref)
    assert facts["digest"] == digest
    assert f_layer_digests(facts) == [layer["digest"] for layer in manifest["layers"]]
    assert facts["user"] == APP_USER and facts["runs_as_root"] is False
    assert facts["workdir"] == APP_WORKDIR
    assert facts["entrypoint"] == list(APP_ENTRYPOINT) and facts["cmd"] == list(APP_CMD)
    assert sorted(facts["exposed_ports"]) == sorted(APP_PORTS)
    for key, value in APP_LABELS.items():
        assert facts["labels"][key] == value
    env = facts["env"]
    assert env[APP_HARMLESS_ENV[0]] == APP_HARMLESS_ENV[1]
    assert APP_SECRET_NAME in env and env[APP_SECRET_NAME] != APP_SECRET_VALUE
    assert WASTE_BYTES <= facts["wasted_bytes"] < WASTE_BYTES + (1 << 20)

    text = dockwise("explain", ref, "--source", "registry", cache=tmp_path, insecure=host)
    assert text.returncode == 0, text.stderr
    assert APP_SECRET_VALUE not in text.stdout + text.stderr
    assert APP_SECRET_NAME in text.stdout


def test_app_image_from_the_engine_agrees_with_the_registry(
    pushed_images: PushedImages, test_images: ImageSet, tmp_path: Path
) -> None:
    host = pushed_images.registry.host
    from_engine = explain_json(
        test_images.app.name, cache=tmp_path / "d", insecure=host, source="docker"
    )
    from_registry = explain_json(pushed_images.refs["app"], cache=tmp_path / "r", insecure=host)
    assert from_engine["source"] == "docker"
    for key in ("user", "exposed_ports", "env", "labels", "os", "packages", "shell", "scratch"):
        assert from_engine[key] == from_registry[key], key
    assert from_engine["wasted_bytes"] == from_registry["wasted_bytes"]
    assert [(h["created_by"], h["empty"]) for h in from_engine["layers"]] == [
        (h["created_by"], h["empty"]) for h in from_registry["layers"]
    ]
    assert from_engine["digest"] == test_images.app.image_id


def test_scratch_image_has_no_os_and_no_shell(pushed_images: PushedImages, tmp_path: Path) -> None:
    ref = pushed_images.refs["static"]
    facts = explain_json(ref, cache=tmp_path, insecure=pushed_images.registry.host)
    manifest, _config, _digest = registry_truth(ref)
    assert facts["scratch"] is True
    assert facts["os"] is None
    assert f_shell(facts) is False
    assert facts["packages"] is None
    assert f_layer_digests(facts) == [layer["digest"] for layer in manifest["layers"]]
    assert len(manifest["layers"]) == 1


def test_distroless_tree(pushed_images: PushedImages, tmp_path: Path) -> None:
    facts = explain_json(
        pushed_images.refs["distroless"], cache=tmp_path, insecure=pushed_images.registry.host
    )
    assert f_shell(facts) is False
    assert f_os_pretty(facts) == "Distroless"
    assert f_packages(facts) == ("dpkg", len(DISTROLESS_PACKAGES))
    assert str(facts["user"]).split(":")[0] == str(NONROOT_UID)
    assert facts["runs_as_root"] is False


def test_alpine_tree(pushed_images: PushedImages, tmp_path: Path) -> None:
    facts = explain_json(
        pushed_images.refs["alpine"], cache=tmp_path, insecure=pushed_images.registry.host
    )
    assert f_os_id(facts) == "alpine"
    assert f_os_version(facts) == ALPINE_VERSION
    assert f_packages(facts) == ("apk", len(ALPINE_PACKAGES))
    assert f_shell(facts) is True


def test_multi_platform_index(pushed_images: PushedImages, tmp_path: Path) -> None:
    multi = pushed_images.multiarch
    host = pushed_images.registry.host
    index = skopeo_inspect(multi.reference, "--raw")
    real = sorted(
        f"{m['platform']['os']}/{m['platform']['architecture']}"
        for m in index["manifests"]
        if m["platform"]["os"] != "unknown"
    )
    facts = explain_json(multi.reference, cache=tmp_path, insecure=host)
    assert sorted(facts["platforms"]) == real == ["linux/amd64", "linux/arm64"]
    arm = explain_json(
        multi.reference, cache=tmp_path, insecure=host, extra=("--platform", "linux/arm64")
    )
    assert arm["platform"] == "linux/arm64"
    arm_digest = next(
        m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == "arm64"
    )
    repo = multi.reference.rsplit(":", 1)[0]
    arm_manifest = skopeo_inspect(f"{repo}@{arm_digest}", "--raw")
    assert f_layer_digests(arm) == [layer["digest"] for layer in arm_manifest["layers"]]
    amd = explain_json(
        multi.reference, cache=tmp_path, insecure=host, extra=("--platform", "linux/amd64")
    )
    assert f_layer_digests(amd) != f_layer_digests(arm)


def test_auto_source_picks_engine_only_image_from_docker(
    pushed_images: PushedImages, tmp_path: Path
) -> None:
    host = pushed_images.registry.host
    local = explain_json(pushed_images.engine_only, cache=tmp_path, insecure=host, source="auto")
    assert local["source"] == "docker"
    remote = explain_json(
        pushed_images.refs["static"], cache=tmp_path, insecure=host, source="auto"
    )
    assert remote["source"] == "registry"


def test_shared_base_layer_is_downloaded_once(
    pushed_images: PushedImages, registry_proxy: CountingProxy, tmp_path: Path
) -> None:
    proxied = {
        role: ref.replace(pushed_images.registry.host, registry_proxy.host, 1)
        for role, ref in pushed_images.refs.items()
    }
    base_digest = skopeo_inspect(pushed_images.refs["debian"], "--raw")["layers"][0]["digest"]
    app_layers = skopeo_inspect(pushed_images.refs["app"], "--raw")["layers"]
    assert app_layers[0]["digest"] == base_digest  # the recipes share the base layer
    registry_proxy.reset()
    explain_json(proxied["debian"], cache=tmp_path, insecure=registry_proxy.host)
    assert registry_proxy.blob_gets.get(base_digest) == 1
    explain_json(proxied["app"], cache=tmp_path, insecure=registry_proxy.host)
    assert registry_proxy.blob_gets.get(base_digest) == 1  # served from the layer cache
    for layer in app_layers[1:]:
        assert registry_proxy.blob_gets.get(layer["digest"], 0) <= 1


def test_invalid_reference_is_one_line(pushed_images: PushedImages, tmp_path: Path) -> None:
    result = dockwise(
        "explain", "Not/A:Ref!!", "--json", cache=tmp_path, insecure=pushed_images.registry.host
    )
    assert_one_line_error(result)
    assert result.stdout == ""


def test_unknown_image_is_one_line(pushed_images: PushedImages, tmp_path: Path) -> None:
    host = pushed_images.registry.host
    for source in ("registry", "docker", "auto"):
        result = dockwise(
            "explain",
            f"{host}/dockwise/never-pushed:1",
            "--json",
            "--source",
            source,
            cache=tmp_path,
            insecure=host,
        )
        assert_one_line_error(result)
        assert "never-pushed" in result.stderr, source
