"""The registry auth handshake (go-containerregistry's ``transport/basic`` and ``bearer``):
a 401 with ``WWW-Authenticate: Basic`` means sending the stored login on every request;
``Bearer realm=…,service=…`` means fetching a pull token for the repository from the realm
(with the stored login if there is one, else anonymously) and sending that.

Credentials come from ``bot.image.auth`` (Docker's config.json and its credential helpers)
and go only to the registry and to the token realm it names, in clear text only when the
registry itself is reached over plain HTTP.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from bot.errors import ContentError, Unauthorized
from bot.image.auth import CredentialStore, TokenCache, parse_challenge
from bot.image.remote import errors
from bot.image.remote.transport import Target, Transport, read_limited

TOKEN_MAX = 1024 * 1024  # a token service's answer


class Authenticator:
    """Auth state for one ``RegistryClient``: Basic logins by registry host and Bearer
    tokens by (registry, scope, user) until they expire."""

    def __init__(self, credentials: CredentialStore, transport: Transport) -> None:
        self.credentials = credentials
        self._transport = transport
        self._tokens = TokenCache()
        self._basic: dict[str, str] = {}  # api_host -> Basic header (the registry asked)

    def has_login(self, domain: str) -> bool:
        return self.credentials.for_registry(domain) is not None

    def header(self, target: Target) -> str | None:
        """The ``Authorization`` value for requests to ``target`` (None: anonymous)."""
        basic = self._basic.get(target.api_host)
        if basic:
            return basic
        token = self._tokens.get(self._token_key(target))
        return f"Bearer {token}" if token else None

    def _token_key(self, target: Target) -> tuple[str, str, str]:
        creds = self.credentials.for_registry(target.login_domain)
        return (target.api_host, target.scope, creds.username if creds else "")

    async def login(self, target: Target, www_authenticate: str) -> None:
        """Answer the registry's challenge so that ``header`` has what it wants. Raises
        ``Unauthorized`` (no usable method or login), ``ContentError`` (a broken token
        answer) or the transport's errors for the token service."""
        challenge = parse_challenge(www_authenticate)
        domain = target.login_domain  # a mirror gets its own login, never the registry's
        creds = await self.credentials.resolve(domain)
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            raise Unauthorized(f"registry {domain} asks for a login method dockwise cannot use")
        if challenge.scheme == "basic":
            if creds is None:
                raise Unauthorized(
                    f"registry {domain} needs a login: add credentials with docker login {domain}"
                )
            self._basic[target.api_host] = creds.basic_header()
            return
        realm = challenge.realm
        if not realm or urllib.parse.urlsplit(realm).scheme not in ("http", "https"):
            raise Unauthorized(f"registry {domain} sent an unusable token realm")
        query = {"scope": target.scope}
        if challenge.params.get("service"):
            query["service"] = challenge.params["service"]
        headers: dict[str, str] = {}
        # Credentials go to the realm the registry names, but never in clear text unless
        # the registry itself is reached over plain http (explicitly configured insecure).
        realm_is_tls = urllib.parse.urlsplit(realm).scheme == "https"
        if creds is not None and (realm_is_tls or target.scheme == "http"):
            headers["Authorization"] = creds.basic_header()
        sep = "&" if "?" in realm else "?"
        url = realm + sep + urllib.parse.urlencode(query)
        realm_host = urllib.parse.urlsplit(realm).netloc
        transport = self._transport
        if transport.url_guard is not None:
            transport.url_guard(url)

        async def fetch() -> dict[str, Any]:
            with errors.translated("token service", realm_host):
                async with transport.session().get(
                    url, headers=headers, allow_redirects=False
                ) as resp:
                    if resp.status in (401, 403):
                        if "Authorization" in headers and creds is not None:
                            raise Unauthorized(
                                f"login to {domain} as {creds.username} was refused: "
                                "check the stored password"
                            )
                        raise Unauthorized(f"{domain} refused an anonymous login")
                    if resp.status == 429 or resp.status >= 500:
                        raise transport.transient_status(resp, realm_host)
                    if resp.status != 200:
                        raise Unauthorized(f"token service of {domain} answered HTTP {resp.status}")
                    body = await read_limited(resp, TOKEN_MAX, "token")
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise ContentError(f"token service of {domain} sent something that is not JSON")
            return data

        data = await transport.with_retries(realm_host, fetch)
        token = data.get("token") or data.get("access_token")
        if not isinstance(token, str) or not token:
            raise ContentError(f"token service of {domain} sent no token")
        expires_in = data.get("expires_in")
        lifetime = (
            float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 60.0
        )
        self._tokens.set(self._token_key(target), token, lifetime)


__all__ = ["Authenticator"]
