"""Credential helpers (``credsStore`` / ``credHelpers`` in Docker's config.json), run as the
docker CLI runs them: ``docker-credential-<name> get`` with the server URL on stdin. The
helpers here are real executables the tests write onto PATH; the registries are the real
htpasswd (Basic) and token (Bearer) fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bot.config import Settings
from bot.errors import Unauthorized
from bot.image.auth import load_credentials
from bot.image.explain import Explainer
from bot.image.registry import RegistryClient, RegistrySource
from bot.image.source import Platform
from tests.fixtures.image_layers import file, tar_bytes
from tests.fixtures.registry import (
    READER_PASSWORD,
    READER_USER,
    RegistryServer,
    push_image,
)

pytestmark = pytest.mark.skipif(
    shutil.which("docker-registry") is None, reason="docker-registry not installed"
)

# The helper protocol (docker-credential-helpers): the server URL on stdin; JSON on stdout,
# or "credentials not found in native keychain" and exit 1.
STORE = """#!/bin/sh
here=$(dirname "$0")
[ "$1" = get ] || { echo "unsupported action $1" >&2; exit 1; }
read -r server || true
echo "$server" >> "$here/calls.log"
answer="$here/$(printf %s "$server" | tr ':/' '__').json"
if [ -f "$answer" ]; then cat "$answer"; exit 0; fi
echo "credentials not found in native keychain"
exit 1
"""
BROKEN = """#!/bin/sh
echo "error getting credentials - err: exit status 1, out: keychain is locked" >&2
exit 1
"""
HANGING = """#!/bin/sh
exec sleep 60
"""


def install(bin_dir: Path, name: str, script: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text(script)
    path.chmod(0o755)
    return path


def store_login(bin_dir: Path, server: str, user: str, secret: str) -> None:
    name = server.replace(":", "_").replace("/", "_") + ".json"
    (bin_dir / name).write_text(
        json.dumps({"ServerURL": server, "Username": user, "Secret": secret})
    )


def docker_config(directory: Path, config: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture
def helpers_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    install(bin_dir, "dwstore", STORE)
    install(bin_dir, "dwbroken", BROKEN)
    install(bin_dir, "dwhang", HANGING)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}")
    return bin_dir


def _layer(text: str) -> bytes:
    import gzip

    return gzip.compress(tar_bytes([file("etc/os-release", f"ID={text}\n")]), mtime=0)


async def test_cred_helpers_entry_logs_in_to_a_basic_auth_registry(
    htpasswd_registry: RegistryServer, helpers_on_path: Path, tmp_path: Path
) -> None:
    host = htpasswd_registry.host
    push_image(htpasswd_registry.pusher(), "helper/basic", "1", [_layer("viahelper")])
    store_login(helpers_on_path, host, READER_USER, READER_PASSWORD)
    config = docker_config(
        tmp_path / "docker", {"credsStore": "dwbroken", "credHelpers": {host: "dwstore"}}
    )  # credHelpers wins over credsStore for its registry, as in the docker CLI
    settings = Settings(cache_dir=tmp_path / "c", insecure_registries=[host], docker_config=config)
    explainer = Explainer(settings)
    try:
        for _ in range(2):
            facts = await explainer.facts(f"{host}/helper/basic:1", source="registry")
            assert facts.to_json()["os"]["id"] == "viahelper"
    finally:
        await explainer.aclose()
    calls = (helpers_on_path / "calls.log").read_text().splitlines()
    assert calls == [host]  # asked with the registry's host:port, once (then cached)


async def test_creds_store_logs_in_to_a_token_registry(
    token_registry: RegistryServer, helpers_on_path: Path, tmp_path: Path
) -> None:
    assert token_registry.token_server is not None
    host = token_registry.host
    push_image(token_registry.pusher(), "helper/private", "1", [_layer("tokenhelper")])
    store_login(helpers_on_path, host, READER_USER, READER_PASSWORD)
    config = docker_config(tmp_path / "docker", {"credsStore": "dwstore"})
    realm = f"127.0.0.1:{token_registry.token_server.port}"
    settings = Settings(
        cache_dir=tmp_path / "c", insecure_registries=[host, realm], docker_config=config
    )
    before = len(token_registry.token_server.requests)
    explainer = Explainer(settings)
    try:
        facts = await explainer.facts(f"{host}/helper/private:1", source="registry")
    finally:
        await explainer.aclose()
    assert facts.to_json()["os"]["id"] == "tokenhelper"
    users = {r["user"] for r in token_registry.token_server.requests[before:]}
    assert users == {READER_USER}


async def test_a_helper_without_a_login_means_anonymous(
    htpasswd_registry: RegistryServer, helpers_on_path: Path, tmp_path: Path
) -> None:
    host = htpasswd_registry.host
    push_image(htpasswd_registry.pusher(), "helper/none", "1", [_layer("x")])
    config = docker_config(tmp_path / "docker", {"credsStore": "dwstore"})
    settings = Settings(cache_dir=tmp_path / "c", insecure_registries=[host], docker_config=config)
    explainer = Explainer(settings)
    try:
        with pytest.raises(Unauthorized, match="needs a login"):
            await explainer.facts(f"{host}/helper/none:1", source="registry")
    finally:
        await explainer.aclose()


@pytest.mark.parametrize(
    ("helper", "message"),
    [
        ("dwbroken", r"docker-credential-dwbroken failed for .*keychain is locked"),
        ("dwhang", r"docker-credential-dwhang did not answer within 0.5 s"),
        ("dwabsent", r"docker-credential-dwabsent .* is not installed or not on PATH"),
    ],
)
async def test_a_failing_helper_is_one_clear_line(
    helper: str,
    message: str,
    htpasswd_registry: RegistryServer,
    helpers_on_path: Path,
    tmp_path: Path,
) -> None:
    host = htpasswd_registry.host
    push_image(htpasswd_registry.pusher(), "helper/fail", "1", [_layer("x")])
    credentials = load_credentials(
        docker_config(tmp_path / "docker", {"credsStore": helper}), helper_timeout=0.5
    )
    async with RegistryClient(credentials=credentials, insecure_registries=[host]) as client:
        with pytest.raises(Unauthorized, match=message) as caught:
            await RegistrySource(client).resolve(f"{host}/helper/fail:1", Platform())
    assert "\n" not in str(caught.value)


async def test_helpers_run_only_when_a_registry_asks_for_a_login(
    registry: RegistryServer, helpers_on_path: Path, tmp_path: Path
) -> None:
    push_image(registry.pusher(), "helper/open", "1", [_layer("open")])
    config = docker_config(tmp_path / "docker", {"credsStore": "dwbroken"})
    settings = Settings(
        cache_dir=tmp_path / "c", insecure_registries=[registry.host], docker_config=config
    )
    explainer = Explainer(settings)
    try:
        facts = await explainer.facts(f"{registry.host}/helper/open:1", source="registry")
    finally:
        await explainer.aclose()
    assert facts.to_json()["os"]["id"] == "open"
