"""Registry credentials and auth challenges.

* ``load_credentials(config_dir)`` reads Docker's ``config.json``
  (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``) the way the docker CLI
  does: ``credHelpers`` (registry -> helper) first, then ``credsStore`` (one helper for
  every registry), then the plain ``auths`` entries (``auth`` = base64 ``user:password``, or
  ``username``/``password``; keys are hosts, ``host:port`` or URLs such as
  ``https://index.docker.io/v1/``). ``identitytoken`` entries are not supported (those
  registries are used anonymously and a warning is logged).
* Credential helpers follow the docker-credential-helpers protocol: ``docker-credential-<name>
  get`` with the server URL on stdin (``https://index.docker.io/v1/`` for Docker Hub, else
  ``host[:port]``) answers ``{"ServerURL", "Username", "Secret"}`` on stdout; "credentials not
  found" means the plain ``auths`` entry if there is one, else anonymous. Helpers run only
  when a registry asks for a login, at most once per registry every
  ``HELPER_CACHE_SECONDS``, and are killed after ``helper_timeout`` seconds.
  A helper that is missing, fails or hangs is one ``Unauthorized`` line naming it.
* ``parse_challenge`` reads a ``WWW-Authenticate`` header (Basic or Bearer).
* ``TokenCache`` keeps Bearer tokens per (registry, scope, user) until shortly before expiry.

Secrets never appear in ``repr`` or logs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import Unauthorized

log = logging.getLogger(__name__)

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def normalise_registry_key(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``http://h:5000/v2`` -> ``h:5000``."""
    key = key.strip()
    if "://" in key:
        key = urllib.parse.urlsplit(key).netloc or key
    key = key.split("/", 1)[0].lower()
    return DOCKER_HUB if key in _HUB_ALIASES else key


HUB_SERVER_URL = "https://index.docker.io/v1/"  # what docker passes helpers for Docker Hub
HELPER_TIMEOUT = 10.0  # seconds a credential helper may take
HELPER_CACHE_SECONDS = 600.0  # a helper's answer is reused this long
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NOT_FOUND = "credentials not found"


class CredentialStore:
    """Credentials by registry domain (as in a Reference: ``docker.io``, ``host:port``):
    plain ``auths`` entries, and credential helpers by registry (``credHelpers``) or for
    all registries (``credsStore``), which take precedence as in the docker CLI."""

    def __init__(
        self,
        auths: dict[str, Credentials] | None = None,
        *,
        helpers: dict[str, str] | None = None,
        default_helper: str | None = None,
        helper_timeout: float = HELPER_TIMEOUT,
    ) -> None:
        self._auths = {normalise_registry_key(k): v for k, v in (auths or {}).items()}
        self._helpers = {normalise_registry_key(k): v for k, v in (helpers or {}).items()}
        self._default_helper = default_helper
        self.helper_timeout = helper_timeout
        self._from_helpers: dict[str, tuple[Credentials | None, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        helpers = sorted(self._helpers) + (["*"] if self._default_helper else [])
        return f"CredentialStore(registries={sorted(self._auths)}, helpers={helpers})"

    def __bool__(self) -> bool:
        return bool(self._auths or self._helpers or self._default_helper)

    def helper_for(self, domain: str) -> str | None:
        """The helper name (``osxkeychain`` for ``docker-credential-osxkeychain``) that
        holds ``domain``'s login, or None for plain ``auths`` entries."""
        return self._helpers.get(normalise_registry_key(domain)) or self._default_helper

    def for_registry(self, domain: str) -> Credentials | None:
        """The login for ``domain`` as known now (a helper's answer once ``resolve`` ran)."""
        key = normalise_registry_key(domain)
        cached = self._from_helpers.get(key)
        if cached is not None and cached[0] is not None:
            return cached[0]
        return self._auths.get(key)

    async def resolve(self, domain: str) -> Credentials | None:
        """The login for ``domain``, running its credential helper when one is configured
        (a helper without a login for it falls back to a plain ``auths`` entry). Raises
        ``Unauthorized`` (one line, naming the helper) when the helper is missing,
        fails or does not answer within ``helper_timeout`` seconds."""
        key = normalise_registry_key(domain)
        helper = self.helper_for(key)
        if helper is None:
            return self._auths.get(key)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one helper run per registry at a time
            cached = self._from_helpers.get(key)
            if cached is not None and time.monotonic() < cached[1]:
                return cached[0]
            creds = await run_helper(helper, key, self.helper_timeout)
            self._from_helpers[key] = (creds, time.monotonic() + HELPER_CACHE_SECONDS)
            return creds if creds is not None else self._auths.get(key)


def helper_server_url(domain: str) -> str:
    """What docker hands a credential helper for a registry."""
    key = normalise_registry_key(domain)
    return HUB_SERVER_URL if key == DOCKER_HUB else key


async def run_helper(name: str, domain: str, seconds: float = HELPER_TIMEOUT) -> Credentials | None:
    """``docker-credential-<name> get`` for ``domain``; None when it has no login for it."""
    program = f"docker-credential-{name}"
    if not _HELPER_NAME.fullmatch(name):
        raise Unauthorized(f"docker config names an invalid credential helper {name[:40]!r}")
    try:
        proc = await asyncio.create_subprocess_exec(
            program,
            "get",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError:
        raise Unauthorized(
            f"credential helper {program} (named in the docker config for {domain}) is not "
            "installed or not on PATH"
        ) from None
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(helper_server_url(domain).encode()), seconds
        )
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise Unauthorized(
            f"credential helper {program} did not answer within {seconds:g} s for {domain}"
        ) from None
    if proc.returncode != 0:
        said = (out or err).decode(errors="replace").strip()
        if _NOT_FOUND in said.lower():
            return None
        first = " ".join(said.splitlines()[0].split())[:160] if said else "no message"
        raise Unauthorized(
            f"credential helper {program} failed for {domain} (exit {proc.returncode}: {first})"
        )
    try:
        data = json.loads(out)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise Unauthorized(f"credential helper {program} answered something that is not JSON")
    user, secret = data.get("Username"), data.get("Secret")
    if not isinstance(user, str) or not isinstance(secret, str) or not user:
        raise Unauthorized(f"credential helper {program} answered without Username/Secret")
    if user == "<token>":
        log.warning(
            "credential helper %s gave an identity token for %s; unsupported", program, domain
        )
        return None
    return Credentials(user, secret)


def default_config_dir() -> Path:
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env) if env else Path.home() / ".docker"


def _entry_credentials(key: str, entry: object) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            log.warning("docker config: unreadable 'auth' for %s, ignored", key)
            return None
        if sep and user:
            return Credentials(user, password)
        log.warning("docker config: 'auth' for %s is not user:password, ignored", key)
        return None
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and name and isinstance(secret, str):
        return Credentials(name, secret)
    if entry.get("identitytoken"):
        log.warning("docker config: identity tokens are not supported (%s), ignored", key)
    return None


def load_credentials(
    config_dir: Path | None = None, *, helper_timeout: float = HELPER_TIMEOUT
) -> CredentialStore:
    """Read ``config_dir/config.json`` (default: ``$DOCKER_CONFIG`` or ``~/.docker``).
    A missing or unreadable file gives an empty store (anonymous access), never an error;
    helpers it names run later, when a registry asks for a login."""
    path = (config_dir or default_config_dir()) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return CredentialStore()
    except (OSError, ValueError) as exc:
        log.warning("docker config %s unreadable (%s); registries are used anonymously", path, exc)
        return CredentialStore()
    if not isinstance(data, dict):
        return CredentialStore()
    store = data.get("credsStore")
    default_helper = store if isinstance(store, str) and store else None
    raw_helpers = data.get("credHelpers")
    helpers = (
        {str(k): v for k, v in raw_helpers.items() if isinstance(v, str) and v}
        if isinstance(raw_helpers, dict)
        else {}
    )
    auths: dict[str, Credentials] = {}
    raw = data.get("auths")
    if isinstance(raw, dict):
        for key, entry in raw.items():
            creds = _entry_credentials(str(key), entry)
            if creds is not None:
                auths[str(key)] = creds
    return CredentialStore(
        auths, helpers=helpers, default_helper=default_helper, helper_timeout=helper_timeout
    )


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "basic" or "bearer" (lower case)
    params: dict[str, str]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenge(header: str) -> Challenge | None:
    """Parse ``Bearer realm="…",service="…",scope="…"`` or ``Basic realm="…"``."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if not match or match.end() == pos:
            break
        value = match.group(2)
        value = re.sub(r"\\(.)", r"\1", value) if value is not None else match.group(3)
        params[match.group(1).lower()] = value
        pos = match.end()
    return Challenge(scheme.lower(), params)


class TokenCache:
    """Bearer tokens by key until ``expires_in`` (minus a safety margin) has passed."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}

    def get(self, key: tuple[str, ...]) -> str | None:
        hit = self._tokens.get(key)
        if hit is None:
            return None
        token, expires_at = hit
        if time.monotonic() >= expires_at:
            del self._tokens[key]
            return None
        return token

    def set(self, key: tuple[str, ...], token: str, expires_in: float) -> None:
        margin = min(30.0, expires_in * 0.1)
        self._tokens[key] = (token, time.monotonic() + max(expires_in - margin, 1.0))

    def __len__(self) -> int:
        return len(self._tokens)
