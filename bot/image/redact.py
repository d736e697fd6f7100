"""Secrets in image metadata: find them by name or by shape, and scrub them everywhere.

An ``ENV`` value whose *name* has a secret-ish word part (``API_KEY``, ``DB_PASSWORD``,
``AWS_ACCESS_KEY_ID``; not ``KEYBOARD_LAYOUT``) or whose *value* looks like a credential
(GitHub/Slack/AWS tokens, PEM private keys) becomes ``<redacted>``. The same values are then
scrubbed from every other string we show (history lines, labels, command lines), since
``ENV``/``ARG`` values leak into ``created_by`` of the history.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeVar

REDACTED = "<redacted>"

# Distinctive words: a name part that *contains* one of these is secret (DBPASSWORD).
_CONTAINS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "PASSPHRASE")
# Short words: only a whole name part counts (API_KEY yes, KEYBOARD no).
_PARTS = frozenset(
    {"KEY", "KEYS", "APIKEY", "ACCESSKEY", "PRIVATE", "AUTH", "PRIVKEY", "CERT", "PWD", "PASS"}
)
# Public by nature: GPG_KEY in official images is a key fingerprint, not a secret.
_PUBLIC_PARTS = frozenset({"GPG", "PGP", "PUBLIC", "PUBKEY", "FINGERPRINT"})
_NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD"})  # the shell's working directory

_VALUE_PATTERNS = [
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{8,}"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\bglpat-[A-Za-z0-9_-]{16,}"),
    re.compile(r"\bsk_live_[A-Za-z0-9]{16,}"),
    re.compile(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)",
        re.DOTALL,
    ),
]
# NAME=value inside command lines and history (``ENV API_TOKEN=abc``, ``|1 TOKEN=x /bin/sh``).
# Bounded and anchored at a word start: unbounded, a long run of letters made this
# quadratic (every start position rescanned the run), and image text can be megabytes.
_ASSIGNMENT = re.compile(
    r"""(?<![A-Za-z0-9_])(?P<name>[A-Za-z_][A-Za-z0-9_]{0,255})="""
    r"""(?P<value>"[^"]{0,8192}"|'[^']{0,8192}'|\S{1,8192})"""
)
_MIN_LITERAL = 4  # shorter secret values are not scrubbed as bare substrings

T = TypeVar("T")


def secret_name(name: str) -> bool:
    upper = name.upper()
    if upper in _NOT_SECRET_NAMES:
        return False
    parts = [p for p in re.split(r"[_\-.]+", upper) if p]
    if any(word in p for p in parts for word in _CONTAINS):
        return True
    if any(p in _PUBLIC_PARTS for p in parts):
        return False  # GPG_KEY, PUBLIC_KEY: not secrets
    return any(p in _PARTS for p in parts)


def secret_value(value: str) -> bool:
    return any(p.search(value) for p in _VALUE_PATTERNS)


class Redactor:
    """Remembers the secret values it saw so it can scrub them from any later text."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        self._known: set[str] = {v for v in known if len(v) >= _MIN_LITERAL}

    def env(self, items: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """``["NAME=value", ...]`` -> (redacted mapping, names that held a secret)."""
        out: dict[str, str] = {}
        flagged: list[str] = []
        for item in items:
            name, _, value = item.partition("=")
            if value and (secret_name(name) or secret_value(value)):
                if len(value) >= _MIN_LITERAL:
                    self._known.add(value)
                out[name] = REDACTED
                flagged.append(name)
            else:
                out[name] = value
        return out, flagged

    def labels(self, labels: dict[str, str]) -> dict[str, str]:
        """Label values under a secret-ish key (``com.example.api-key``) are redacted too."""
        out = {}
        for key, value in labels.items():
            if value and (secret_name(key) or secret_value(value)):
                if len(value) >= _MIN_LITERAL:
                    self._known.add(value)
                out[key] = REDACTED
            else:
                out[key] = value
        return out

    def text(self, text: str) -> str:
        for value in sorted(self._known, key=len, reverse=True):
            text = text.replace(value, REDACTED)
        for pattern in _VALUE_PATTERNS:
            text = pattern.sub(REDACTED, text)

        def assignment(match: re.Match[str]) -> str:
            if secret_name(match["name"]) and match["value"] != REDACTED:
                return f"{match['name']}={REDACTED}"
            return match[0]

        return _ASSIGNMENT.sub(assignment, text)

    def scrub(self, value: T) -> T:
        """Scrub every string inside nested lists/dicts (keys included)."""
        return self._scrub(value)  # type: ignore[return-value]

    def _scrub(self, value: object) -> object:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self._scrub(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._scrub(v) for v in value)
        if isinstance(value, dict):
            return {self._scrub(k): self._scrub(v) for k, v in value.items()}
        return value


__all__ = ["REDACTED", "Redactor", "secret_name", "secret_value"]
