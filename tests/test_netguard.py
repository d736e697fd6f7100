"""The SSRF guard against real aiohttp requests and real loopback listeners.

Every request goes through ``guarded_connector``. Targets on loopback get a real listening
socket that counts accepted connections (a refusal must leave it at zero); for targets we
cannot listen on, a Python audit hook records every ``socket.connect`` the process attempts
during the test and *blocks* any to a non-local address, so these tests can never send
traffic off the machine even if the guard were broken.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from bot.config import Settings
from bot.errors import Forbidden, InvalidInput
from bot.netguard import (
    Trust,
    check_registry_allowed,
    check_url,
    forbidden_reason,
    guarded_connector,
    url_guard,
)

# --------------------------------------------------------------------------- audit hook


class _ConnectLog:
    """Addresses passed to socket.connect while a test is recording."""

    def __init__(self) -> None:
        self.active = False
        self.attempts: list[tuple[str, int]] = []
        self.blocked: list[tuple[str, int]] = []


_LOG = _ConnectLog()


def _is_local(host: str) -> bool:
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified  # 0.0.0.0 and :: mean "this host" on Linux


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "socket.connect" or not _LOG.active:
        return
    address = args[1]
    if not isinstance(address, tuple):  # AF_UNIX paths are not our business
        return
    target = (str(address[0]), int(address[1]))
    _LOG.attempts.append(target)
    if not _is_local(target[0]):
        _LOG.blocked.append(target)
        raise PermissionError(f"test safety net: connect to {target} blocked")


sys.addaudithook(_audit)


@pytest.fixture
def connects() -> Iterator[_ConnectLog]:
    _LOG.attempts.clear()
    _LOG.blocked.clear()
    _LOG.active = True
    try:
        yield _LOG
    finally:
        _LOG.active = False


# --------------------------------------------------------------------------- listeners


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _ipv6_loopback()


@dataclass
class Listener:
    """A tiny HTTP server that counts accepted connections."""

    host: str
    redirect_to: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    accepted: int = 0
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def url(self, host: str | None = None) -> str:
        host = host or self.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}/"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            headers = dict(self.headers)
            status = self.status
            if self.redirect_to is not None:
                status, headers["Location"] = 302, self.redirect_to
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            response = f"HTTP/1.1 {status} X\r\n{head}Content-Length: 2\r\nConnection: close\r\n"
            writer.write(response.encode() + b"\r\nok")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def listen() -> AsyncIterator[Any]:
    started: list[Listener] = []

    async def start(host: str, port: int = 0, **kwargs: Any) -> Listener:
        if ":" in host and not HAS_IPV6:
            pytest.skip("no IPv6 loopback (::1) here")
        listener = Listener(host, **kwargs)
        listener.server = await asyncio.start_server(listener._handle, host, port)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        assert listener.server is not None
        listener.server.close()
        await listener.server.wait_closed()


# --------------------------------------------------------------------------- fake DNS


class FakeDNS(AbstractResolver):
    """Canned DNS answers: name -> list of answers, one per lookup (the last repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        sequence = self.answers.get(host)
        if not sequence:
            raise OSError(f"{host}: no such name")
        addresses = sequence[min(self.lookups.count(host), len(sequence)) - 1]
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def settings(insecure: list[str] | None = None, allow: list[str] | None = None) -> Settings:
    return Settings(insecure_registries=insecure or [], registry_allowlist=allow or [])


async def fetch(url: str, config: Settings, dns: AbstractResolver | None = None, **kw: Any) -> str:
    connector = guarded_connector(config, backend=dns, **kw)
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as resp:
        return f"{resp.status} {await resp.text()}"


# --------------------------------------------------------------------------- the battery

# (host to put in the URL, loopback address to listen on, expected words in the refusal)
LOOPBACK_TARGETS = [
    ("127.0.0.1", "127.0.0.1", "127.0.0.1:{port} (loopback address)"),
    ("127.1.2.3", "127.1.2.3", "127.1.2.3:{port} (loopback address)"),
    ("::1", "::1", "[::1]:{port} (loopback address)"),
    (
        "::ffff:127.0.0.1",
        "127.0.0.1",
        "[::ffff:7f00:1]:{port} (IPv4-mapped form of 127.0.0.1, a loopback address)",
    ),
    ("0.0.0.0", "127.0.0.1", "0.0.0.0:{port} (unspecified address)"),
    ("::", "::1", "[::]:{port} (unspecified address)"),
    ("localhost", "127.0.0.1", "localhost:{port}: it resolves to"),
    ("2130706433", "127.0.0.1", "2130706433:{port}: it means 127.0.0.1 (loopback address)"),
    ("0x7f000001", "127.0.0.1", "0x7f000001:{port}: it means 127.0.0.1 (loopback address)"),
    ("0x7f.1", "127.0.0.1", "0x7f.1:{port}: it means 127.0.0.1 (loopback address)"),
    ("0177.0.0.1", "127.0.0.1", "0177.0.0.1:{port}: it means 127.0.0.1 (loopback address)"),
    ("127.1", "127.0.0.1", "127.1:{port}: it means 127.0.0.1 (loopback address)"),
]


@pytest.mark.parametrize(("host", "bind", "expected"), LOOPBACK_TARGETS)
async def test_loopback_targets_are_refused_without_a_connection(
    host: str, bind: str, expected: str, listen: Any, connects: _ConnectLog
) -> None:
    listener = await listen(bind)
    with pytest.raises(Forbidden) as caught:
        await fetch(listener.url(host), settings())
    message = str(caught.value)
    assert message.startswith("refusing to connect to " + expected.format(port=listener.port))
    assert "\n" not in str(caught.value)
    assert listener.accepted == 0
    assert connects.attempts == []


# The same targets through a plain connector reach the listener: the listener test above
# really would notice a connection. (aiohttp itself rejects the all-digit legacy forms.)
@pytest.mark.parametrize(
    ("host", "bind"),
    [(h, b) for h, b, _ in LOOPBACK_TARGETS if h not in ("2130706433", "0177.0.0.1", "127.1")],
)
async def test_unguarded_control_reaches_the_listener(
    host: str, bind: str, listen: Any, connects: _ConnectLog
) -> None:
    if ":" in host and not HAS_IPV6:
        pytest.skip("no IPv6 loopback (::1) here")
    listener = await listen(bind)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{listener.port}/"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
    assert listener.accepted == 1


UNREACHABLE_TARGETS = [
    ("10.0.0.1", "private address"),
    ("172.16.5.4", "private address"),
    ("192.168.1.1", "private address"),
    ("100.64.0.1", "carrier-grade NAT address"),
    ("169.254.169.254", "cloud metadata service"),
    ("169.254.1.1", "link-local address"),
    ("fe80::1", "link-local address"),
    ("fe80::1%25lo", "link-local address"),
    ("224.0.0.1", "multicast address"),
    ("ff02::1", "multicast address"),
    ("255.255.255.255", "broadcast address"),
    ("240.0.0.1", "reserved address"),
    ("fc00::1", "unique-local address"),
    ("fd12:3456::1", "unique-local address"),
    ("fec0::1", "site-local address"),
    ("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1, a private address"),
    ("::ffff:169.254.169.254", "IPv4-mapped form of 169.254.169.254"),
    ("::10.0.0.1", "deprecated IPv4-compatible address"),
    ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254"),
    ("64:ff9b:1::1", "local-use NAT64 address"),
    ("2002:a00:1::1", "6to4 form of 10.0.0.1, a private address"),
    ("2001:0:4136:e378::1", "Teredo tunnel address"),
    ("2001:db8::1", "non-public address"),
    ("198.18.0.1", "non-public address"),
    ("192.0.2.1", "non-public address"),
    ("167772161", "10.0.0.1 (private address)"),  # decimal 10.0.0.1
    ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254 (link-local"),  # hex metadata address
    ("0251.0376.0251.0376", "169.254.169.254 (link-local"),  # octal metadata address
]


@pytest.mark.parametrize(("host", "expected"), UNREACHABLE_TARGETS)
async def test_internal_targets_are_refused_before_any_connect(
    host: str, expected: str, connects: _ConnectLog
) -> None:
    shown = f"[{host}]" if ":" in host else host
    with pytest.raises(Forbidden) as caught:
        await fetch(f"http://{shown}:8080/v2/", settings())
    assert expected in str(caught.value)
    assert connects.attempts == []


@pytest.mark.parametrize(
    ("name", "answer", "expected"),
    [
        ("evil.test", "127.0.0.1", "evil.test:{port}: it resolves to 127.0.0.1 (loopback address)"),
        ("evil6.test", "::1", "evil6.test:{port}: it resolves to ::1 (loopback address)"),
        ("meta.test", "169.254.169.254", "it resolves to 169.254.169.254"),
        ("lan.test", "192.168.0.10", "(private address)"),
        ("mapped.test", "::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1"),
    ],
)
async def test_names_resolving_inside_are_refused(
    name: str, answer: str, expected: str, listen: Any, connects: _ConnectLog
) -> None:
    listener = await listen("::1" if answer == "::1" else "127.0.0.1")
    dns = FakeDNS({name: [[answer]]})
    with pytest.raises(Forbidden) as caught:
        await fetch(f"http://{name}:{listener.port}/", settings(), dns)
    assert expected.format(port=listener.port) in str(caught.value)
    assert dns.lookups == [name]
    assert listener.accepted == 0
    assert connects.attempts == []


async def test_mixed_answer_connects_only_to_the_permitted_address(
    listen: Any, connects: _ConnectLog
) -> None:
    trusted = await listen("127.0.0.5")
    dns = FakeDNS({"mixed.test": [["10.0.0.1", "127.0.0.1", "127.0.0.5"]]})
    body = await fetch(f"http://mixed.test:{trusted.port}/", settings(["127.0.0.5/32"]), dns)
    assert body == "200 ok"
    assert trusted.accepted == 1
    assert connects.attempts == [("127.0.0.5", trusted.port)]


async def test_rebinding_dns_cannot_swap_the_checked_address(
    listen: Any, connects: _ConnectLog
) -> None:
    # 127.0.0.3 is trusted by range and plays the "public" first answer; the attacker's DNS
    # then answers 127.0.0.1 to any later lookup.
    for _ in range(20):  # two listeners on one port number, on two loopback addresses
        first = await listen("127.0.0.3")
        port = first.port
        try:
            inside = await listen("127.0.0.1", port)
            break
        except OSError:
            continue
    else:
        pytest.fail("no port free on both 127.0.0.3 and 127.0.0.1")
    dns = FakeDNS({"rebind.test": [["127.0.0.3"], ["127.0.0.1"]]})
    config = settings(["127.0.0.3/32"])
    url = f"http://rebind.test:{port}/"

    check_url(url, config)  # the static check does not consume a DNS answer
    assert dns.lookups == []
    connector = guarded_connector(config, backend=dns, use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(url) as resp:
            assert resp.status == 200
        assert dns.lookups == ["rebind.test"]  # one lookup, and its checked answer was used
        assert connects.attempts == [("127.0.0.3", port)]
        with pytest.raises(Forbidden, match=rf"rebind\.test:{port}: it resolves to 127\.0\.0\.1"):
            async with session.get(url, headers={"Connection": "close"}) as resp:
                pass
    assert (first.accepted, inside.accepted) == (1, 0)
    assert connects.attempts == [("127.0.0.3", port)]


# --------------------------------------------------------------------------- exemptions


async def test_listed_insecure_registry_is_reachable_but_not_other_ports(
    listen: Any, connects: _ConnectLog
) -> None:
    listed = await listen("127.0.0.1")
    other = await listen("127.0.0.1")
    config = settings([f"127.0.0.1:{listed.port}"])
    assert await fetch(listed.url(), config) == "200 ok"
    with pytest.raises(Forbidden) as caught:
        await fetch(other.url(), config)
    assert str(caught.value) == f"refusing to connect to 127.0.0.1:{other.port} (loopback address)"
    assert (listed.accepted, other.accepted) == (1, 0)


async def test_listed_name_is_reachable_through_the_resolver(
    listen: Any, connects: _ConnectLog
) -> None:
    listed = await listen("127.0.0.1")
    dns = FakeDNS({"registry.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
    config = settings([f"registry.test:{listed.port}"])
    assert await fetch(f"http://registry.test:{listed.port}/", config, dns) == "200 ok"
    with pytest.raises(Forbidden, match=r"other\.test:\d+: it resolves to 127\.0\.0\.1 "):
        await fetch(f"http://other.test:{listed.port}/", config, dns)
    assert listed.accepted == 1


async def test_redirect_to_unlisted_loopback_is_refused(listen: Any, connects: _ConnectLog) -> None:
    target = await listen("127.0.0.2")
    named_target = await listen("127.0.0.2")
    start = await listen("127.0.0.1", redirect_to=target.url())
    via_name = await listen("127.0.0.1", redirect_to=f"http://evil.test:{named_target.port}/")
    dns = FakeDNS({"evil.test": [["127.0.0.2"]]})
    config = settings([f"127.0.0.1:{start.port}", f"127.0.0.1:{via_name.port}"])

    with pytest.raises(Forbidden, match=rf"127\.0\.0\.2:{target.port} \(loopback address\)"):
        await fetch(start.url(), config)
    with pytest.raises(Forbidden, match=r"evil\.test:\d+: it resolves to 127\.0\.0\.2"):
        await fetch(via_name.url(), config, dns)
    assert (start.accepted, via_name.accepted) == (1, 1)
    assert (target.accepted, named_target.accepted) == (0, 0)

    # Followed by hand, as a registry client does: check_url refuses the Location first.
    connector = guarded_connector(config)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(start.url(), allow_redirects=False) as resp:
            assert resp.status == 302
            location = resp.headers["Location"]
        with pytest.raises(Forbidden, match=r"127\.0\.0\.2"):
            check_url(location, config)
    assert target.accepted == 0


async def test_bearer_realm_pointing_inside_is_refused(listen: Any, connects: _ConnectLog) -> None:
    token_service = await listen("127.0.0.2")
    realm = f"{token_service.url()}token?service=x&scope=repository:a/b:pull"
    registry = await listen(
        "127.0.0.1",
        status=401,
        headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="x"'},
    )
    config = settings([f"127.0.0.1:{registry.port}"])
    connector = guarded_connector(config)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(registry.url() + "v2/") as resp:
            assert resp.status == 401
            challenge = resp.headers["WWW-Authenticate"]
        found = challenge.split('realm="', 1)[1].split('"', 1)[0]
        assert found == realm
        with pytest.raises(Forbidden) as caught:
            check_url(found, config)
        port = token_service.port
        assert str(caught.value) == f"refusing to connect to 127.0.0.2:{port} (loopback address)"
        with pytest.raises(Forbidden):  # and the connector refuses it even unchecked
            async with session.get(found):
                pass
    assert token_service.accepted == 0


# --------------------------------------------------------------------------- check_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file:///etc/passwd", "refusing to fetch a file URL: only http and https are allowed"),
        ("gopher://127.0.0.1:6379/_", "a gopher URL: only http and https"),
        ("ftp://example.com/", "a ftp URL: only http and https"),
        ("/token?service=x", "a scheme-less URL"),
        ("http:///nohost", "refusing to fetch a URL without a host"),
        ("http://%31%32%37.0.0.1/", "(loopback address)"),
        ("http://localhost:5000/v2/", "localhost:5000 (loopback name)"),
        ("http://LOCALHOST./v2/", "localhost (loopback name)"),
        ("https://registry.localhost/v2/", "registry.localhost (loopback name)"),
        ("http://[::1]:5000/", "[::1]:5000 (loopback address)"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata service"),
        ("http://2130706433/", "2130706433: it means 127.0.0.1"),
        ("http://0x7f.1/", "0x7f.1: it means 127.0.0.1"),
        ("http://134744072/", "134744072: it means 8.8.8.8 (non-standard numeric form"),
    ],
)
def test_check_url_refuses(url: str, expected: str) -> None:
    with pytest.raises(Forbidden) as caught:
        check_url(url, settings())
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://registry-1.docker.io/v2/",
        "https://auth.docker.io/token?service=registry.docker.io",
        "https://8.8.8.8/v2/",
        "https://[2606:4700::1]/v2/",
        "http://registry.example.com:5000/v2/",
    ],
)
def test_check_url_accepts_public_urls_without_connecting(url: str, connects: _ConnectLog) -> None:
    assert str(check_url(url, settings())) == url
    assert connects.attempts == []


def test_url_guard_is_check_url_bound_to_settings() -> None:
    guard = url_guard(settings(["127.0.0.1:5000"]))
    guard("http://127.0.0.1:5000/v2/")
    guard("https://auth.docker.io/token")
    with pytest.raises(Forbidden, match=r"127\.0\.0\.1:5001 \(loopback address\)"):
        guard("http://127.0.0.1:5001/token")


def test_check_url_honours_insecure_registries() -> None:
    config = settings(["localhost:5000", "10.1.0.0/16", "[::1]:5001"])
    check_url("http://localhost:5000/v2/", config)
    check_url("http://10.1.2.3:1234/v2/", config)
    check_url("http://[::1]:5001/v2/", config)
    for refused in ("http://localhost:5001/", "http://10.2.0.1/", "http://[::1]:5000/"):
        with pytest.raises(Forbidden):
            check_url(refused, config)


# --------------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        # Python 3.11's is_global calls all of these global; they are not.
        ("ff02::1", "multicast address"),
        ("fec0::1", "site-local address"),
        ("::127.0.0.1", "deprecated IPv4-compatible address"),
        ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1, a loopback address"),
        ("2002:7f00:1::", "6to4 form of 127.0.0.1, a loopback address"),
        ("100.64.0.1", "carrier-grade NAT address"),
        ("0.1.2.3", "'this network' address"),
        # Public addresses, including public IPv4 in the IPv6 forms that embed one.
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700::1", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
        ("2002:808:808::1", None),
    ],
)
def test_forbidden_reason(address: str, expected: str | None) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) == expected


def test_trust_entries() -> None:
    trust = Trust.parse(["Registry.LAN", "reg.lan:5000", "[::1]:5001", "fd00::/8", "http://x:81"])
    assert trust.endpoint("registry.lan", 443)
    assert trust.endpoint("registry.lan", 80)
    assert not trust.endpoint("registry.lan", 5000)  # a port-less entry is default ports only
    assert trust.endpoint("reg.lan", 5000)
    assert not trust.endpoint("reg.lan", 443)
    assert trust.endpoint("::1", 5001)
    assert trust.endpoint("[0:0::1]", 5001)
    assert trust.endpoint("x", 81)
    assert trust.address(ipaddress.ip_address("fd00::5"))
    assert not trust.address(ipaddress.ip_address("fc00::5"))
    with pytest.raises(InvalidInput, match="DOCKWISE_INSECURE_REGISTRIES entry 'h:port'"):
        Trust.parse(["h:port"])
    with pytest.raises(InvalidInput):
        Trust.parse(["10.0.0.0/33"])


def test_insecure_registries_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKWISE_INSECURE_REGISTRIES", "LocalHost:5000, 10.0.0.0/8")
    config = Settings()
    check_url("http://localhost:5000/", config)
    check_url("http://10.9.9.9/", config)
    with pytest.raises(Forbidden):
        check_url("http://localhost:5001/", config)


# --------------------------------------------------------------------------- allowlist


def test_no_allowlist_allows_every_registry() -> None:
    for host in ("docker.io", "ghcr.io", "registry.example.com:5000"):
        check_registry_allowed(host, settings())


def test_allowlist_patterns() -> None:
    config = settings(allow=["ghcr.io", "*.example.com", "registry.lan:5000", "index.docker.io"])
    for allowed in (
        "ghcr.io",
        "GHCR.io",
        "a.example.com",
        "a.b.example.com",
        "registry.lan:5000",
        "docker.io",
        "registry-1.docker.io",
    ):
        check_registry_allowed(allowed, config)
    for refused in (
        "quay.io",
        "example.com",
        "evilexample.com",
        "a.example.com:5000",
        "registry.lan",
        "registry.lan:5001",
        "ghcr.io.evil.com",
        "docker.io:5000",
    ):
        with pytest.raises(Forbidden) as caught:
            check_registry_allowed(refused, config)
        assert str(caught.value) == (
            f"refusing to inspect images from {refused}: it is not on this bot's registry allowlist"
        )


def test_allowlist_without_docker_hub_refuses_it() -> None:
    config = settings(allow=["ghcr.io"])
    for hub in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        with pytest.raises(Forbidden):
            check_registry_allowed(hub, config)


def test_allowlist_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKWISE_REGISTRY_ALLOWLIST", "docker.io, *.corp.example")
    config = Settings()
    check_registry_allowed("registry-1.docker.io", config)
    check_registry_allowed("images.corp.example", config)
    with pytest.raises(Forbidden):
        check_registry_allowed("ghcr.io", config)


# --------------------------------------------------------------------------- last line


async def test_socket_factory_checks_the_exact_address() -> None:
    """Whatever reaches the socket factory is checked again, independently of the URL."""
    connector = guarded_connector(settings(["127.0.0.7/32", "127.0.0.1:5000"]))
    try:
        stream = (socket.AF_INET, socket.SOCK_STREAM, 0, "")
        for refused in ("127.0.0.1", "169.254.169.254", "10.0.0.1"):
            with pytest.raises(Forbidden, match=f"refusing to connect to {refused} "):
                connector.open_socket((*stream, (refused, 443)))
        for allowed in [("127.0.0.7", 443), ("127.0.0.1", 5000), ("8.8.8.8", 443)]:
            connector.open_socket((*stream, allowed)).close()
        v6 = (socket.AF_INET6, socket.SOCK_STREAM, 0, "")
        with pytest.raises(Forbidden, match="IPv4-mapped"):
            connector.open_socket((*v6, ("::ffff:10.0.0.1", 443, 0, 0)))
    finally:
        await connector.close()


async def test_connector_keeps_its_own_resolver_and_socket_factory() -> None:
    with pytest.raises(TypeError, match="sets socket_factory itself"):
        guarded_connector(settings(), socket_factory=None)
