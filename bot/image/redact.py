"""Secrets in image metadata: find them by name or by shape, and scrub them everywhere.

An ``ENV`` value whose *name* has a secret-ish word part (``API_KEY``, ``DB_PASSWORD``,
``AWS_ACCESS_KEY_ID``; not ``KEYBOARD_LAYOUT``) becomes ``<redacted>``. Credentials found
by *shape* (a password in URL userinfo, cloud keys, registry and package-index tokens, chat
webhooks, JWTs, private keys) are replaced span by span, wherever they are: the shapes are
data, bot/image/data/gitleaks_rules.toml (a subset of gitleaks' rules, MIT, licence beside
it) and bot/image/data/dockwise_rules.toml, in gitleaks' rule format. The same values are then
scrubbed from every other string we show (history lines, labels, command lines), since
``ENV``/``ARG`` values leak into ``created_by`` of the history.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
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

RULE_FILES = ("gitleaks_rules.toml", "dockwise_rules.toml")  # in bot/image/data/


@dataclass(frozen=True, slots=True)
class Rule:
    """One secret shape from the rule data (gitleaks' format)."""

    id: str
    regex: re.Pattern[str]
    group: int | None  # secretGroup; None: first non-empty group, else the whole match
    keywords: tuple[str, ...]  # lower case; the rule runs only when one occurs
    allow: tuple[re.Pattern[str], ...]  # allowlisted secrets (e.g. AWS's ...EXAMPLE keys)


@functools.cache
def rules() -> tuple[Rule, ...]:
    """The rules kept as data in bot/image/data (gitleaks' MIT rules and dockwise's own).
    A rule whose regex Python cannot compile is skipped (none is, today: tested)."""
    out: list[Rule] = []
    for name in RULE_FILES:
        doc = tomllib.loads(resources.files("bot.image").joinpath("data", name).read_text())
        for raw in doc.get("rules", []):
            try:
                regex = re.compile(raw["regex"])
                allow = tuple(
                    re.compile(pattern)
                    for block in raw.get("allowlists", [])
                    for pattern in block.get("regexes", [])
                )
            except (re.error, KeyError, TypeError):
                continue
            group = raw.get("secretGroup")
            out.append(
                Rule(
                    str(raw["id"]),
                    regex,
                    int(group) if group else None,
                    tuple(str(k).lower() for k in raw.get("keywords", [])),
                    allow,
                )
            )
    return tuple(out)


def find_secrets(text: str) -> list[tuple[int, int, str]]:
    """(start, end, rule id) of every secret span in ``text``, overlaps merged (the first
    rule's id kept), in order."""
    lower = text.lower()
    spans: list[tuple[int, int, str]] = []
    for rule in rules():
        if rule.keywords and not any(k in lower for k in rule.keywords):
            continue
        for match in rule.regex.finditer(text):
            group = rule.group
            if group is None and match.re.groups:
                group = next((i for i in range(1, match.re.groups + 1) if match.group(i)), 0)
            start, end = match.span(group or 0)
            secret = text[start:end]
            if end <= start or any(a.search(secret) for a in rule.allow):
                continue
            spans.append((start, end, rule.id))
    spans.sort()
    merged: list[tuple[int, int, str]] = []
    for start, end, rule_id in spans:
        if merged and start <= merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], end), last[2])
        else:
            merged.append((start, end, rule_id))
    return merged


def redact_secrets(text: str) -> tuple[str, list[str]]:
    """``text`` with only each secret span replaced by <redacted>, and the rule ids hit."""
    spans = find_secrets(text)
    if not spans:
        return text, []
    out: list[str] = []
    at = 0
    for start, end, _ in spans:
        out += [text[at:start], REDACTED]
        at = end
    out.append(text[at:])
    return "".join(out), [rule_id for _, _, rule_id in spans]


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
    """True when a rule finds a secret span in ``value``."""
    return bool(find_secrets(value))


class Redactor:
    """Remembers the secret values it saw so it can scrub them from any later text."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        self._known: set[str] = {v for v in known if len(v) >= _MIN_LITERAL}
        self.findings: list[tuple[str, str, str]] = []  # (where, name, rule id); no values

    def _value(self, where: str, name: str, value: str) -> str | None:
        """The value to show, or None when it holds no secret."""
        if not value:
            return None
        if secret_name(name):
            if len(value) >= _MIN_LITERAL:
                self._known.add(value)
            self.findings.append((where, name, "secret-name"))
            return REDACTED
        spans = find_secrets(value)
        if not spans:
            return None
        for start, end, rule_id in spans:
            if end - start >= _MIN_LITERAL:
                self._known.add(value[start:end])
            self.findings.append((where, name, rule_id))
        return redact_secrets(value)[0]

    def env(self, items: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """``["NAME=value", ...]`` -> (redacted mapping, names that held a secret). A value
        under a secret-ish name is replaced whole; elsewhere only each secret span is
        (``postgres://app:<redacted>@db/app``)."""
        out: dict[str, str] = {}
        flagged: list[str] = []
        for item in items:
            name, _, value = item.partition("=")
            shown = self._value("env", name, value)
            out[name] = value if shown is None else shown
            if shown is not None:
                flagged.append(name)
        return out, flagged

    def labels(self, labels: dict[str, str]) -> dict[str, str]:
        """Label values under a secret-ish key (``com.example.api-key``) are redacted whole,
        secret spans in other labels alone."""
        out = {}
        for key, value in labels.items():
            shown = self._value("label", key, value)
            out[key] = value if shown is None else shown
        return out

    def history(self, index: int, text: str) -> str:
        """One history line, redacted (``text``), with its secrets recorded as findings."""
        for _, _, rule_id in find_secrets(text):
            self.findings.append(("history", str(index), rule_id))
        return self.text(text)

    def text(self, text: str) -> str:
        for value in sorted(self._known, key=len, reverse=True):
            text = text.replace(value, REDACTED)
        text = redact_secrets(text)[0]

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


__all__ = [
    "REDACTED",
    "Redactor",
    "Rule",
    "find_secrets",
    "redact_secrets",
    "rules",
    "secret_name",
    "secret_value",
]
