"""Tell an image request ("explain nginx", "what's in python:3.12-slim?") from a question."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.errors import InvalidReference
from bot.image.reference import from_paste


@dataclass(frozen=True, slots=True)
class ExplainIntent:
    reference: str


@dataclass(frozen=True, slots=True)
class QuestionIntent:
    text: str


# A reference-looking token: no spaces, starts alnum (or "<" of a chat auto-link), may hold
# / : @ . _ - and the URL characters of a pasted web address (? = & % # ~ |).
_REF = r"(?P<ref><?[A-Za-z0-9][A-Za-z0-9._/:@+?=&%#~|-]*>?)"
# A pasted command naming an image: docker pull nginx:1.27, podman image pull …
_COMMAND = (
    r"(?P<ref>(?:sudo\s+)?(?:docker|podman|nerdctl)\s+(?:image\s+)?(?:pull|run|create)\s+[^`]+?)"
)
_VERBS = r"^(?:please\s+)?(?:explain|inspect|analy[sz]e|describe)\s+(?:the\s+)?(?:image\s+)?"
_PATTERNS = [
    re.compile(rf"{_VERBS}`?{_COMMAND}`?\s*\??$", re.I),
    # The whole message is a pasted pull command or a Docker Hub page address.
    re.compile(
        r"^`?(?P<ref>(?:sudo\s+)?(?:docker|podman|nerdctl)\s+(?:image\s+)?pull\s+\S+)`?$", re.I
    ),
    re.compile(r"^(?P<ref><?https?://(?:www\.)?hub\.docker\.com/\S+)$", re.I),
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
                try:
                    return ExplainIntent(from_paste(ref))
                except InvalidReference:
                    return ExplainIntent(ref)  # the explainer answers with the fix
    return QuestionIntent(stripped)
