"""Registry credentials and auth challenges.

* ``load_credentials(config_dir)`` reads the ``auths`` section of Docker's
  ``config.json`` (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``).
  Entries carry ``auth`` (base64 ``user:password``) or ``username``/``password``; keys are
  hosts, ``host:port`` or URLs such as ``https://index.docker.io/v1/``. Credential
  helpers (``credsStore``/``credHelpers``) and ``identitytoken`` entries are not supported:
  those registries are used anonymously and a warning is logged once.
* ``parse_challenge`` reads a ``WWW-Authenticate`` header (Basic or Bearer).
* ``TokenCache`` keeps Bearer tokens per (registry, scope, user) until shortly before expiry.

Secrets never appear in ``repr`` or logs.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

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


class CredentialStore:
    """Credentials by registry domain (as in a Reference: ``docker.io``, ``host:port``)."""

    def __init__(self, auths: dict[str, Credentials] | None = None) -> None:
        self._auths = {normalise_registry_key(k): v for k, v in (auths or {}).items()}

    def __repr__(self) -> str:
        return f"CredentialStore(registries={sorted(self._auths)})"

    def __bool__(self) -> bool:
        return bool(self._auths)

    def for_registry(self, domain: str) -> Credentials | None:
        return self._auths.get(normalise_registry_key(domain))


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


def load_credentials(config_dir: Path | None = None) -> CredentialStore:
    """Read ``config_dir/config.json`` (default: ``$DOCKER_CONFIG`` or ``~/.docker``).
    A missing or unreadable file gives an empty store (anonymous access), never an error."""
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
    if data.get("credsStore") or data.get("credHelpers"):
        log.warning(
            "docker config %s uses credential helpers, which dockwise does not run; "
            "only plain 'auths' entries are used",
            path,
        )
    auths: dict[str, Credentials] = {}
    raw = data.get("auths")
    if isinstance(raw, dict):
        for key, entry in raw.items():
            creds = _entry_credentials(str(key), entry)
            if creds is not None:
                auths[str(key)] = creds
    return CredentialStore(auths)


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
