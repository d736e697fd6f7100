"""Outbound safety: which hosts and addresses dockwise may connect to.

Anyone in a chat can ask dockwise to explain ``some.host/image``; without a guard that is
a request forgery (SSRF) primitive: the bot would fetch from loopback services, the cloud
metadata endpoint (169.254.169.254) or the private network it runs in. This module refuses
that, in three layers that all share one address policy (``forbidden_reason``):

1. ``check_url(url, settings)``: a static check for every URL before it is requested
   (registry base URL, the Bearer ``realm`` from a ``WWW-Authenticate`` challenge, each
   redirect hop). It refuses non-HTTP schemes, IP literals in forbidden ranges, legacy
   numeric IPv4 spellings (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``, which
   ``getaddrinfo``/``inet_aton`` accept) and ``localhost`` names.
2. ``GuardedResolver``: an aiohttp resolver that resolves a name once, drops forbidden
   addresses and returns only the addresses it checked, so the connector connects to exactly
   those: there is no second lookup an attacker's DNS could answer differently (rebinding).
   If nothing is left the request fails with ``Forbidden``.
3. ``GuardedConnector`` (from ``guarded_connector(settings)``): a ``TCPConnector`` using that
   resolver. aiohttp does not call resolvers for IP-literal hosts, so the connector also checks
   literal hosts itself on every connection (redirects included), and its socket factory
   re-checks the exact socket address right before ``connect()`` as a last line of defence.

Operators can trust registries on internal addresses with ``DOCKWISE_INSECURE_REGISTRIES``
(``host``, ``host:port``, an ``http(s)://`` URL or an address range such as ``10.1.0.0/16``):
see ``Trust``, the one policy the registry client also uses to choose plain HTTP.
``DOCKWISE_REGISTRY_ALLOWLIST`` restricts which registries may be inspected at all: see
``check_registry_allowed``.

Python's ``ipaddress.is_global`` is not enough on its own (on 3.11 it calls ``ff02::1``,
``fec0::1``, ``::127.0.0.1``, ``64:ff9b::7f00:1`` and ``2002:7f00:1::`` global), so the
forbidden classes are spelled out below and ``is_global`` is only the final catch-all.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from cachetools import LRUCache
from yarl import URL

from bot.errors import Forbidden, InvalidInput

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

    from bot.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

__all__ = [
    "DOCKER_HUB_HOSTS",
    "GuardedConnector",
    "GuardedResolver",
    "Trust",
    "check_registry_allowed",
    "check_url",
    "forbidden_reason",
    "guarded_connector",
    "url_guard",
]

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# IPv4 classes, checked in this order (first match names the reason).
_V4_RULES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/32"), "unspecified address"),
    (_V4("0.0.0.0/8"), "'this network' address"),
    (_V4("127.0.0.0/8"), "loopback address"),
    (_V4("10.0.0.0/8"), "private address"),
    (_V4("172.16.0.0/12"), "private address"),
    (_V4("192.168.0.0/16"), "private address"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT address"),
    (_V4("169.254.169.254/32"), "link-local address of the cloud metadata service"),
    (_V4("169.254.0.0/16"), "link-local address"),
    (_V4("224.0.0.0/4"), "multicast address"),
    (_V4("255.255.255.255/32"), "broadcast address"),
    (_V4("240.0.0.0/4"), "reserved address"),
)

# IPv6 prefixes that embed an IPv4 address, which then decides.
_NAT64 = _V6("64:ff9b::/96")  # RFC 6052 well-known prefix: last 32 bits are the IPv4 address
_SIXTOFOUR = _V6("2002::/16")  # RFC 3056: bits 16..48 are the IPv4 address
_V4_MAPPED = _V6("::ffff:0:0/96")

_V6_RULES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified address"),
    (_V6("::1/128"), "loopback address"),
    (_V6("::/96"), "deprecated IPv4-compatible address"),
    (_V6("64:ff9b:1::/48"), "local-use NAT64 address"),
    (_V6("2001::/32"), "Teredo tunnel address"),
    (_V6("fc00::/7"), "unique-local address"),
    (_V6("fe80::/10"), "link-local address"),
    (_V6("fec0::/10"), "site-local address"),
    (_V6("ff00::/8"), "multicast address"),
    (_V6("::/8"), "reserved address"),
)


def parse_ip(text: str) -> IPAddress | None:
    """An IP address from a literal host (``::1``, ``[::1]``, ``fe80::1%eth0``), else None.

    Only canonical forms: legacy numeric IPv4 spellings are handled by ``_legacy_ipv4``.
    """
    text = urllib.parse.unquote(text).strip("[]")
    text = text.split("%", 1)[0]  # drop an IPv6 zone id; the address class decides
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why dockwise must not connect to ``ip`` (e.g. "loopback address"), or None if public."""
    if isinstance(ip, ipaddress.IPv4Address):
        for net, reason in _V4_RULES:
            if ip in net:
                return reason
        return None if ip.is_global else "non-public address"
    ip = ipaddress.IPv6Address(int(ip))  # without a zone id, so network membership works
    embedded: tuple[ipaddress.IPv4Address, str] | None = None
    if ip in _V4_MAPPED and ip.ipv4_mapped is not None:
        embedded = (ip.ipv4_mapped, "IPv4-mapped")
    elif ip in _NAT64:
        embedded = (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64")
    elif ip in _SIXTOFOUR and ip.sixtofour is not None:
        embedded = (ip.sixtofour, "6to4")
    if embedded is not None:
        inner, form = embedded
        inner_reason = forbidden_reason(inner)
        return f"{form} form of {inner}, a {inner_reason}" if inner_reason else None
    for net6, reason in _V6_RULES:
        if ip in net6:
            return reason
    return None if ip.is_global else "non-public address"


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address a non-canonical numeric host means to ``inet_aton``/``getaddrinfo``.

    ``2130706433``, ``0x7f000001``, ``0x7f.1``, ``0177.0.0.1`` and ``127.1`` all mean
    127.0.0.1 to the C library. Returns None for canonical dotted quads and for names.
    """
    if not host or not all(c.isascii() and (c.isalnum() or c == ".") for c in host):
        return None
    try:
        packed = socket.inet_aton(host)
    except OSError:
        return None
    ip = ipaddress.IPv4Address(packed)
    return None if str(ip) == host else ip


def _split_host_port(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 -> (host, port)."""
    text = text.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed bracket in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected text after ] in {text!r}")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:  # bare IPv6 literal, no port
        host, port_text = text, ""
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"no host in {text!r}")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"invalid port in {text!r}")
        return _normalise_host(host), int(port_text)
    return _normalise_host(host), None


def _normalise_host(host: str) -> str:
    host = host.strip("[]").lower().rstrip(".")
    ip = parse_ip(host)
    return str(ip) if ip is not None else host


@dataclass(frozen=True)
class Trust:
    """The one policy for ``DOCKWISE_INSECURE_REGISTRIES``, parsed once, used by the address
    guard (which internal hosts may be reached) and by the registry client (which registries
    are spoken to over plain HTTP), so an entry means the same thing to both.

    Entries, comma-separated, case-insensitive:

    * ``host:port`` (``registry.lan:5000``, ``127.0.0.1:5000``, ``[::1]:5000``): that exact
      host and port. For a name, every address it resolves to is accepted for that port only.
    * ``host`` without a port: the host on the default ports 80 and 443 only.
    * an address range (``10.1.0.0/16``, ``fd00::/8``, ``127.0.0.3/32``): any host whose
      address is inside the range, on any port, as Docker's own insecure-registries CIDRs.
    * a URL (``http://registry.lan:5000``, ``https://registry.lan:5000``): its ``host[:port]``
      as above. ``https://`` keeps TLS (the address is trusted, the connection stays
      encrypted and verified); every other entry means plain HTTP.

    Plain HTTP (``plain_http``): a listed ``host[:port]`` (not written ``https://``), or a
    registry whose address (the literal, or any address its name resolves to) is inside a
    listed range, as dockerd decides for its ``insecure-registries``.
    """

    endpoints: frozenset[tuple[str, int | None]] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    tls_endpoints: frozenset[tuple[str, int | None]] = frozenset()  # written https://

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Trust:
        """The policy for ``entries``; raises ``InvalidInput`` naming a malformed entry."""
        return _parse_trust(tuple(entries))

    @classmethod
    def from_settings(cls, settings: Settings) -> Trust:
        return cls.parse(settings.insecure_registries)

    def plain_http(self, host: str, port: int | None, addresses: Iterable[IPAddress] = ()) -> bool:
        """Speak plain HTTP to the registry ``host[:port]`` (``addresses``: what its name
        resolves to, needed only when ``needs_addresses``)?"""
        key = _normalise_host(host)
        if (key, port) in self.tls_endpoints or (
            (key, None) in self.tls_endpoints and port in (None, 80, 443)
        ):
            return False
        if self.endpoint(host, port):
            return True
        ip = parse_ip(key)
        return any(self.address(a) for a in ([ip] if ip is not None else addresses))

    def needs_addresses(self, host: str) -> bool:
        """Whether ``plain_http`` for this host depends on its DNS answers (it is a name
        and address ranges are listed)."""
        return bool(self.networks) and parse_ip(_normalise_host(host)) is None

    def registry_plain_http(self, domain: str, addresses: Iterable[IPAddress] = ()) -> bool:
        """``plain_http`` for a reference's registry part (``host``, ``host:port``,
        ``[v6]:port``); False for a malformed one."""
        try:
            host, port = _split_host_port(domain)
        except ValueError:
            return False
        return self.plain_http(host, port, addresses)

    def endpoint(self, host: str, port: int | None) -> bool:
        """Is ``host:port`` (name or literal) listed? A port-less entry covers 80 and 443."""
        host = _normalise_host(host)
        if (host, port) in self.endpoints:
            return True
        return (host, None) in self.endpoints and port in (None, 80, 443)

    def address(self, ip: IPAddress) -> bool:
        """Is ``ip`` inside a trusted address range?"""
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            ip = ipaddress.IPv6Address(int(ip))
            candidates = [ip]
            if ip.ipv4_mapped is not None:
                candidates.append(ip.ipv4_mapped)
        return any(
            c in net for c in candidates for net in self.networks if c.version == net.version
        )


@functools.lru_cache(maxsize=32)
def _parse_trust(entries: tuple[str, ...]) -> Trust:
    endpoints: set[tuple[str, int | None]] = set()
    tls: set[tuple[str, int | None]] = set()
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        scheme = ""
        if "://" in entry:
            parts = urllib.parse.urlsplit(entry)
            scheme, entry = parts.scheme, parts.netloc
        try:
            if scheme not in ("", "http", "https"):
                raise ValueError(scheme)
            if "/" in entry:
                networks.append(ipaddress.ip_network(entry, strict=False))
            else:
                endpoint = _split_host_port(entry)
                endpoints.add(endpoint)
                if scheme == "https":
                    tls.add(endpoint)
        except ValueError:
            raise InvalidInput(
                f"DOCKWISE_INSECURE_REGISTRIES entry {raw!r} is not host, host:port, "
                "an http(s):// URL or an address range like 10.0.0.0/8"
            ) from None
    return Trust(frozenset(endpoints), tuple(networks), frozenset(tls))


def _show(host: str, port: int | None) -> str:
    """``host``, with ``:port`` unless the port is a default one (80, 443)."""
    if port in (None, 80, 443):
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _refuse(
    host: str, port: int | None, ip: IPAddress, reason: str, *, resolved: bool = False
) -> Forbidden:
    """The refusal, naming the host as written (and the port unless 80/443) and why."""
    address = str(ip)
    literal = _normalise_host(host) == address
    shown = _show(address if literal else host, port)
    if literal:
        return Forbidden(f"refusing to connect to {shown} ({reason})")
    verb = "resolves to" if resolved else "means"
    return Forbidden(f"refusing to connect to {shown}: it {verb} {address} ({reason})")


def _check_literal(host: str, port: int | None, trust: Trust) -> bool:
    """Check a host that is an IP literal in any spelling.

    Returns True if ``host`` was a literal (and is allowed), False if it is a name for the
    resolver to check; raises ``Forbidden`` for a forbidden literal.
    """
    legacy = _legacy_ipv4(host)
    if legacy is not None:
        # Never pass these on: they hide the address from anything reading the URL.
        why = forbidden_reason(legacy) or "non-standard numeric form of an IP address"
        raise _refuse(host, port, legacy, why)
    ip = parse_ip(host)
    if ip is None:
        if ":" in host:
            raise Forbidden(f"refusing to connect to {host} (not a valid IP address)")
        return False
    reason = forbidden_reason(ip)
    if reason is not None and not trust.endpoint(str(ip), port) and not trust.address(ip):
        raise _refuse(host, port, ip, reason)
    return True


def check_url(url: str | URL, settings: Settings) -> URL:
    """Refuse a URL dockwise must not fetch; returns the parsed URL.

    Static checks only (scheme, IP literals in every spelling, ``localhost`` names): names
    are checked against their DNS answers by ``GuardedResolver`` at connect time. Apply it to
    the registry URL, the Bearer ``realm`` and each redirect ``Location`` before requesting.
    """
    # Messages never echo the whole URL: redirect targets can carry signed query strings.
    try:
        parsed = url if isinstance(url, URL) else URL(url)
    except ValueError:
        raise Forbidden("refusing to fetch an invalid URL") from None
    if parsed.scheme not in ("http", "https"):
        scheme = parsed.scheme[:20] or "scheme-less"
        raise Forbidden(f"refusing to fetch a {scheme} URL: only http and https are allowed")
    host = parsed.raw_host
    if not host:
        raise Forbidden("refusing to fetch a URL without a host")
    trust = Trust.from_settings(settings)
    if _check_literal(host, parsed.port, trust):
        return parsed
    name = host.lower().rstrip(".")
    loopback_trusted = trust.endpoint(name, parsed.port) or any(
        trust.address(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")
    )  # a listed range holding loopback: the resolver checks what the name resolves to
    if (name == "localhost" or name.endswith(".localhost")) and not loopback_trusted:
        raise Forbidden(f"refusing to connect to {_show(name, parsed.port)} (loopback name)")
    return parsed


# Names that all mean Docker Hub: the reference domain, its legacy name, its API host.
# Its token realm (auth.docker.io) and blob CDN are reached by redirects or challenges, not
# named in references, so the allowlist does not apply to them (the SSRF guard still does).
DOCKER_HUB_HOSTS = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


def _registry_key(text: str) -> tuple[str, int | None]:
    host, port = _split_host_port(text)
    if host in DOCKER_HUB_HOSTS and port in (None, 443):
        return "docker.io", None
    return host, port


def check_registry_allowed(host: str, settings: Settings) -> None:
    """Refuse a registry not in ``DOCKWISE_REGISTRY_ALLOWLIST`` (no list: all allowed).

    ``host`` is the registry part of a reference (``docker.io``, ``ghcr.io``,
    ``registry.lan:5000``, ``[::1]:5000``). Patterns are ``host``, ``host:port`` or
    ``*.example.com`` (any name below example.com, not example.com itself), optionally with
    ``:port``. A pattern without a port matches the registry only on its default port. Any
    Docker Hub alias (docker.io, index.docker.io, registry-1.docker.io) in the list allows
    Docker Hub, whichever alias the reference uses.
    """
    patterns = settings.registry_allowlist
    if not patterns:
        return
    try:
        name, port = _registry_key(host)
    except ValueError:
        raise Forbidden(
            f"refusing to inspect images from {host[:200]!r}: not a valid registry name"
        ) from None
    for pattern in patterns:
        wildcard = pattern.strip().lower().startswith("*.")
        try:
            p_name, p_port = _registry_key(pattern.strip()[2:] if wildcard else pattern)
        except ValueError:
            continue
        if p_port != port:
            continue
        if (wildcard and name.endswith("." + p_name)) or (not wildcard and name == p_name):
            return
    raise Forbidden(
        f"refusing to inspect images from {host}: it is not on this bot's registry allowlist"
    )


@dataclass
class _Approved:
    """Socket addresses the resolver handed out for trusted names (bounded)."""

    entries: LRUCache[tuple[str, int], bool] = field(default_factory=lambda: LRUCache(maxsize=4096))

    def add(self, ip: IPAddress, port: int) -> None:
        self.entries[(str(_strip_zone(ip)), port)] = True

    def __contains__(self, key: tuple[IPAddress, int]) -> bool:
        return (str(_strip_zone(key[0])), key[1]) in self.entries


def _strip_zone(ip: IPAddress) -> IPAddress:
    return ipaddress.IPv6Address(int(ip)) if isinstance(ip, ipaddress.IPv6Address) else ip


class GuardedResolver(AbstractResolver):
    """Resolve once, keep only permitted addresses, refuse if none is left.

    ``backend`` does the actual lookup (default: aiohttp's ``ThreadedResolver``, i.e. the
    system's ``getaddrinfo``); tests inject a resolver with canned answers.
    """

    def __init__(
        self,
        settings: Settings,
        backend: AbstractResolver | None = None,
        *,
        trust: Trust | None = None,
    ) -> None:
        self.trust = trust if trust is not None else Trust.from_settings(settings)
        self._backend = backend
        self._owns_backend = backend is None
        self.approved = _Approved()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._backend is None:
            self._backend = ThreadedResolver()
        if _check_literal(host, port, self.trust):  # callers other than TCPConnector
            return await self._backend.resolve(host, port, family)
        results = await self._backend.resolve(host, port, family)
        trusted_name = self.trust.endpoint(host, port)
        kept: list[ResolveResult] = []
        first_refusal: tuple[IPAddress, str] | None = None
        for result in results:
            ip = parse_ip(result["host"])
            if ip is None:
                continue
            reason = forbidden_reason(ip)
            if reason is None:
                kept.append(result)
            elif (
                trusted_name
                or self.trust.address(ip)
                or self.trust.endpoint(str(ip), result["port"])
            ):
                self.approved.add(ip, result["port"])
                kept.append(result)
            elif first_refusal is None:
                first_refusal = (ip, reason)
        if not kept:
            if first_refusal is not None:
                raise _refuse(host, port, *first_refusal, resolved=True)
            raise OSError(f"{host} did not resolve to any usable address")
        return kept

    async def close(self) -> None:
        if self._backend is not None and self._owns_backend:
            await self._backend.close()


class GuardedConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that only ever connects to permitted addresses.

    Names go through ``GuardedResolver``; IP-literal hosts (which aiohttp never passes to a
    resolver) are checked here on every connection, redirects included; and the socket
    factory checks the final socket address. Happy Eyeballs is off so that a refusal from
    the socket factory surfaces as ``Forbidden`` rather than a generic connection error.
    Proxies are not supported: with a proxy, the proxy would resolve and connect.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        backend: AbstractResolver | None = None,
        **kwargs: object,
    ) -> None:
        for reserved in ("resolver", "socket_factory", "happy_eyeballs_delay"):
            if reserved in kwargs:
                raise TypeError(f"GuardedConnector sets {reserved} itself")
        self.guard = GuardedResolver(settings, backend)
        super().__init__(
            resolver=self.guard,
            socket_factory=self.open_socket,
            happy_eyeballs_delay=None,
            **kwargs,  # type: ignore[arg-type]
        )

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
    ) -> Connection:
        host = req.url.raw_host or ""
        _check_literal(host, req.url.port, self.guard.trust)
        return await super().connect(req, traces, timeout)

    def open_socket(self, addr_info: AddrInfoType) -> socket.socket:
        """The socket factory: the last check, on the exact address about to be connected."""
        family, type_, proto, _, sockaddr = addr_info
        ip = parse_ip(str(sockaddr[0]))
        port = sockaddr[1]
        if ip is None or not isinstance(port, int):
            raise Forbidden(f"refusing to connect to {sockaddr[0]} (not an IP address)")
        reason = forbidden_reason(ip)
        trust = self.guard.trust
        if (
            reason is not None
            and (ip, port) not in self.guard.approved
            and not trust.address(ip)
            and not trust.endpoint(str(ip), port)
        ):
            raise _refuse(str(ip), port, ip, reason)
        return socket.socket(family, type_, proto)

    async def close(self, *, abort_ssl: bool = False) -> None:
        try:
            await super().close(abort_ssl=abort_ssl)
        finally:
            await self.guard.close()


def guarded_connector(
    settings: Settings, *, backend: AbstractResolver | None = None, **kwargs: object
) -> GuardedConnector:
    """The connector every outbound registry/token request must use.

    ``aiohttp.ClientSession(connector=guarded_connector(settings))``. Extra keyword arguments
    go to ``aiohttp.TCPConnector`` (``limit``, ``ttl_dns_cache``, ``ssl``...).
    """
    return GuardedConnector(settings, backend=backend, **kwargs)


def url_guard(settings: Settings) -> Callable[[str], None]:
    """``check_url`` bound to ``settings``, for ``RegistryClient(url_guard=...)``."""

    def guard(url: str) -> None:
        check_url(url, settings)

    return guard
