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


# --------------------------------------------------------------------------- Dockerfile, compare


@dataclass(frozen=True, slots=True)
class DockerfileIntent:
    """A message holding a fenced Dockerfile; ``text`` is the Dockerfile itself."""

    text: str


@dataclass(frozen=True, slots=True)
class CompareIntent:
    a: str
    b: str


# An opening fence, an optional language line, the body (some chat composers put the first
# line right after the fence: "```FROM debian"), and a closing fence or the end.
_FENCE = re.compile(
    r"```(?:[ \t]*(?P<lang>[A-Za-z0-9_.+-]+)[ \t]*\n|[ \t]*\n)?(?P<body>.*?)(?:```|\Z)", re.S
)
# A Dockerfile's first instruction, after any comment lines ("# build stage").
_DOCKERFILE_START = re.compile(
    r"^(?:[ \t]*(?:#[^\n]*)?\n)*\s*(?:FROM\s|ARG\s|#\s*(?:syntax|escape|check)\s*=)", re.I
)
_VS = r"(?:vs\.?|versus)"
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*"  # noqa: S105 - a regex, not a secret
_COMPARE_PATTERNS = [
    re.compile(
        rf"^/?image-explain\s+`?(?P<a>{_TOKEN})`?\s+(?:{_VS}|and|with|to)\s+`?(?P<b>{_TOKEN})`?$",
        re.I,
    ),
    re.compile(
        rf"^(?:please\s+)?(?:compare|diff)\s+(?:the\s+)?(?:images?\s+)?`?(?P<a>{_TOKEN})`?"
        rf"\s+(?:(?:{_VS}|and|with|to|against)\s+)?(?:the\s+image\s+)?`?(?P<b>{_TOKEN})`?"
        r"(?:\s*,?\s+please)?\s*[?.!]?$",
        re.I,
    ),
]
# "what's the difference between A and B?": a compare only when both name images (a tag,
# a registry or a digest); "the difference between alpine and debian" stays a question.
_DIFFERENCE = re.compile(
    rf"^(?:what(?:['’]?s|\s+is)\s+)?(?:the\s+)?differences?\s+between\s+`?(?P<a>{_TOKEN})`?"
    rf"\s+and\s+`?(?P<b>{_TOKEN})`?\s*[?.!]?$",
    re.I,
)
_BARE_VS = re.compile(rf"^`?(?P<a>{_TOKEN})`?\s+{_VS}\s+`?(?P<b>{_TOKEN})`?\s*\??$", re.I)
# Topics people put side by side that are not images ("cmd vs entrypoint").
_NOT_COMPARED = _NOT_IMAGES | {
    "copy",
    "add",
    "arg",
    "env",
    "run",
    "vm",
    "vms",
    "vm?",
    "bind",
    "mounts",
    "podman",
    "kubernetes",
    "compose",
    "expose",
    "publish",
    "slim",
    "distroless",
}


def _clean_ref(ref: str) -> str:
    return ref.strip("`").rstrip("?.!,")


def parse_dockerfile_or_compare(text: str) -> DockerfileIntent | CompareIntent | None:
    """A fenced Dockerfile (```dockerfile ...``` or a bare ``` block that starts with FROM,
    ARG or a parser directive), or a request to compare two images ("compare A and B",
    "A vs B", "/image-explain A vs B"); None for anything else."""
    for fence in _FENCE.finditer(text):
        lang, body = (fence.group("lang") or "").lower(), fence.group("body").rstrip()
        if lang in ("dockerfile", "docker", "containerfile") or (
            not lang and _DOCKERFILE_START.match(body)
        ):
            return DockerfileIntent(body + "\n")
    stripped = text.strip()
    if len(stripped) > 1000:  # two image references are short; don't scan long text
        return None
    explicit = True
    match = _COMPARE_PATTERNS[0].match(stripped) or _COMPARE_PATTERNS[1].match(stripped)
    if match is None:
        explicit = False
        match = _BARE_VS.match(stripped) or _DIFFERENCE.match(stripped)
    if match is None:
        return None
    a, b = _clean_ref(match.group("a")), _clean_ref(match.group("b"))
    if a.lower() in _NOT_COMPARED or b.lower() in _NOT_COMPARED:
        return None
    # "alpine vs slim" is a question; "alpine:3.20 vs debian:bookworm-slim" names images.
    if not explicit and not any(c in a + b for c in ":/@"):
        return None
    return CompareIntent(a, b)
