"""DOCKWISE_INSECURE_REGISTRIES (issue 11, item 15): one parser and one policy object
(``bot.netguard.Trust``) decide both what the address guard lets through and which
registries the client speaks plain HTTP to, so host, host:port, URL and address-range
entries behave the same for both. Against a real ``docker-registry`` on loopback, which
speaks plain HTTP only: an entry that lets the guard through but left the client on https
would fail with a TLS error."""

from __future__ import annotations

import gzip
import ipaddress
import shutil
from pathlib import Path

import pytest

from bot.config import Settings
from bot.errors import Forbidden, InvalidInput, Unreachable
from bot.image.explain import Explainer
from bot.image.reference import parse_reference
from bot.image.registry import RegistryClient
from bot.netguard import Trust, check_url
from tests.fixtures.image_layers import file, tar_bytes
from tests.fixtures.registry import RegistryServer, push_image

pytestmark = pytest.mark.skipif(
    shutil.which("docker-registry") is None, reason="docker-registry not installed"
)


@pytest.mark.parametrize(
    ("entry", "registry", "plain"),
    [
        ("registry.lan:5000", "registry.lan:5000", True),
        ("registry.lan:5000", "registry.lan:5001", False),
        ("registry.lan", "registry.lan", True),
        ("registry.lan", "registry.lan:5000", False),  # port-less: default ports only
        ("http://registry.lan:5000", "registry.lan:5000", True),
        ("https://registry.lan:5000", "registry.lan:5000", False),  # trusted, TLS kept
        ("10.1.0.0/16", "10.1.2.3:5000", True),
        ("10.1.0.0/16", "10.2.0.1:5000", False),
        ("fd00::/8", "[fd00::5]:5000", True),
        ("[::1]:5001", "[::1]:5001", True),
    ],
)
def test_one_policy_decides_guard_and_plain_http(entry: str, registry: str, plain: bool) -> None:
    settings = Settings(insecure_registries=[entry])
    client = RegistryClient(insecure_registries=settings.insecure_registries)
    target = client.target(parse_reference(f"{registry}/team/app"))
    assert target.scheme == ("http" if plain else "https")
    assert Trust.from_settings(settings).registry_plain_http(registry) is plain
    if plain and not registry.startswith("registry.lan"):  # literal addresses: guard too
        check_url(f"{target.scheme}://{registry}/v2/", settings)


def test_a_name_inside_a_listed_range_is_plain_http_after_lookup() -> None:
    trust = Trust.parse(["10.1.0.0/16"])
    assert trust.needs_addresses("registry.lan")
    assert not trust.registry_plain_http("registry.lan:5000")
    assert trust.registry_plain_http("registry.lan:5000", [ipaddress.ip_address("10.1.9.9")])
    assert not trust.registry_plain_http("registry.lan:5000", [ipaddress.ip_address("10.2.0.1")])


def test_malformed_entries_are_one_clear_error() -> None:
    for bad in ("ftp://registry.lan", "h:port", "10.0.0.0/33"):
        with pytest.raises(InvalidInput, match="DOCKWISE_INSECURE_REGISTRIES entry"):
            RegistryClient(insecure_registries=[bad])


@pytest.mark.parametrize(
    "entry",
    ["{host}", "http://{host}", "127.0.0.0/8", "127.0.0.1/32"],
)
async def test_every_entry_form_reaches_the_real_plain_http_registry(
    entry: str, registry: RegistryServer, tmp_path: Path
) -> None:
    layer = gzip.compress(tar_bytes([file("etc/os-release", "ID=trusted\n")]), mtime=0)
    pushed = push_image(registry.pusher(), "trust/app", "1", [layer])
    settings = Settings(
        cache_dir=tmp_path / "cache", insecure_registries=[entry.format(host=registry.host)]
    )
    explainer = Explainer(settings)
    try:
        facts = (await explainer.facts(f"{registry.host}/trust/app:1", source="registry")).to_json()
    finally:
        await explainer.aclose()
    assert facts["digest"] == pushed.digest
    assert facts["os"]["id"] == "trusted"


async def test_a_range_covers_a_registry_name_that_resolves_into_it(
    registry: RegistryServer, tmp_path: Path
) -> None:
    layer = gzip.compress(tar_bytes([file("etc/os-release", "ID=byname\n")]), mtime=0)
    push_image(registry.pusher(), "trust/named", "1", [layer])
    port = registry.host.rsplit(":", 1)[1]
    explainer = Explainer(Settings(cache_dir=tmp_path / "c", insecure_registries=["127.0.0.0/8"]))
    try:
        facts = await explainer.facts(f"localhost:{port}/trust/named:1", source="registry")
    finally:
        await explainer.aclose()
    assert facts.to_json()["os"]["id"] == "byname"


async def test_an_https_entry_trusts_the_address_but_keeps_tls(
    registry: RegistryServer, tmp_path: Path
) -> None:
    push_image(registry.pusher(), "trust/tls", "1", [gzip.compress(tar_bytes([]), mtime=0)])
    reference = f"{registry.host}/trust/tls:1"
    tls = Explainer(
        Settings(cache_dir=tmp_path / "t", insecure_registries=[f"https://{registry.host}"])
    )
    untrusted = Explainer(Settings(cache_dir=tmp_path / "u"))
    try:
        # Past the guard (not Forbidden), but TLS to a plain-HTTP server cannot work.
        with pytest.raises(Unreachable):
            await tls.facts(reference, source="registry")
        with pytest.raises(Forbidden):
            await untrusted.facts(reference, source="registry")
    finally:
        await tls.aclose()
        await untrusted.aclose()


async def test_a_cached_image_is_refused_once_its_registry_is_no_longer_allowed(
    registry: RegistryServer, tmp_path: Path
) -> None:
    push_image(registry.pusher(), "trust/cached", "1", [gzip.compress(tar_bytes([]), mtime=0)])
    reference = f"{registry.host}/trust/cached:1"
    cache = tmp_path / "shared-cache"
    allowed = Explainer(Settings(cache_dir=cache, insecure_registries=[registry.host]))
    refused = Explainer(Settings(cache_dir=cache))  # same cache, registry no longer listed
    try:
        await allowed.facts(reference, source="registry")  # manifest and layers now cached
        with pytest.raises(Forbidden):
            await refused.facts(reference, source="registry")
    finally:
        await allowed.aclose()
        await refused.aclose()
