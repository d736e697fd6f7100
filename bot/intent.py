"""Tell an image request ("explain nginx", "what's in python:3.12-slim?") from a question."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ExplainIntent:
    reference: str


@dataclass(frozen=True, slots=True)
class QuestionIntent:
    text: str


# A reference-looking token: no spaces, starts alnum, may hold / : @ . _ -
_REF = r"(?P<ref>[A-Za-z0-9][A-Za-z0-9._/:@+-]*)"
_PATTERNS = [
    re.compile(
        rf"^(?:please\s+)?(?:explain|inspect|analy[sz]e|describe)\s+(?:the\s+)?(?:image\s+)?`?{_REF}`?\s*\??$",
        re.I,
    ),
    re.compile(
        rf"^what(?:'s|’s| is)\s+(?:inside|in)\s+(?:the\s+)?(?:image\s+)?`?{_REF}`?\s*\??$", re.I
    ),
    re.compile(rf"^/?image-explain\s+`?{_REF}`?$", re.I),
]
# Words that look like references but are questions ("explain layers", "explain containers").
_NOT_IMAGES = {
    "layers",
    "layer",
    "containers",
    "container",
    "images",
    "image",
    "docker",
    "kernel",
    "it",
    "this",
    "that",
    "me",
    "scratch",
    "namespaces",
    "cgroups",
    "volumes",
    "dockerfile",
    "dockerfiles",
    "entrypoint",
    "cmd",
    "why",
    "how",
    "what",
    "multi-stage",
    "musl",
    "glibc",
}


def parse_intent(text: str) -> ExplainIntent | QuestionIntent:
    stripped = text.strip()
    for pattern in _PATTERNS:
        match = pattern.match(stripped)
        if match:
            ref = match.group("ref").rstrip("?.!,")
            if ref.lower() not in _NOT_IMAGES:
                return ExplainIntent(ref)
    return QuestionIntent(stripped)
