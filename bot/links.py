"""Finding image references in text: registry web links and references people paste.

- ``image_from_url(url)``: a registry web page for an image, as a reference:
  ``https://hub.docker.com/_/python`` -> ``python``, ``hub.docker.com/r/org/app`` ->
  ``org/app``, ``https://ghcr.io/org/app`` -> ``ghcr.io/org/app``,
  ``https://quay.io/repository/org/app`` -> ``quay.io/org/app``. A ``?tab=tags&name=TAG``
  or ``/tags/TAG`` part adds the tag. A ghcr.io or quay.io link that is a whole reference
  (``http://ghcr.io/org/app:1.2``, what chat apps make of a pasted ``ghcr.io/org/app:1.2``)
  is that reference. ``None`` for any other URL.
- ``find_image_reference(text)``: the first image reference in a message: a registry link,
  then ``docker pull|run X``, ``FROM X``, ``image: X``, ``explain X``, then any word shaped
  like a reference with a tag, digest or registry domain (``python:3.12-slim``,
  ``ghcr.io/org/app``). ``None`` if there is none. Each candidate is checked with
  ``bot.image.reference.parse_reference``.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

from bot.errors import DockwiseError

#: Image links unfurled in chat, by web host.
IMAGE_LINK_HOSTS = ("hub.docker.com", "ghcr.io", "quay.io")

_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_URL = re.compile(r"https?://[^\s<>|)\]\"']+", re.IGNORECASE)
_REF = r"`?(?P<ref>[A-Za-z0-9][A-Za-z0-9._/:@+-]*)`?"
_CUES = [
    re.compile(rf"\b(?:docker|podman)\s+(?:pull|run(?:\s+-\S+(?:\s+\S+)?)*)\s+{_REF}", re.I),
    re.compile(rf"^\s*FROM\s+(?:--platform=\S+\s+)?{_REF}", re.I | re.M),
    re.compile(rf"\bimage:\s*{_REF}", re.I),
    re.compile(rf"\b(?:explain|inspect)\s+(?:the\s+)?(?:image\s+)?{_REF}", re.I),
]
# A word that is clearly a reference: has a tag, a digest or a registry domain.
_SHAPED = re.compile(
    r"(?<![\w/.:@-])`?(?P<ref>(?:[a-z0-9-]+(?:\.[a-z0-9-]+)+(?::\d+)?/)?"
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64}))`?(?![\w/@-])"
)
_DOMAIN_REF = re.compile(
    r"(?<![\w/.:@-])(?P<ref>(?:ghcr\.io|quay\.io|gcr\.io|docker\.io|registry\.k8s\.io|"
    r"public\.ecr\.aws|mcr\.microsoft\.com)/[a-z0-9._/-]+[a-z0-9])"
)


def _valid(ref: str) -> str | None:
    from bot.image.reference import parse_reference

    ref = ref.strip("`.,;!?")
    if not ref or ref.lower() in {"scratch"}:
        return None
    try:
        parse_reference(ref)
    except (DockwiseError, ValueError):
        return None
    return ref


def _path_parts(path: str) -> list[str]:
    return [unquote(p) for p in path.split("/") if p]


def image_from_url(url: str) -> str | None:
    """The image reference a registry web link points at (see the module docstring)."""
    try:
        parts = urlsplit(url.strip().rstrip(">"))
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    path = _path_parts(parts.path)
    tags = parse_qs(parts.query).get("name") or []
    tag: str | None = tags[0] if tags else None
    name: str | None = None
    if host in ("hub.docker.com", "www.docker.com") or host.endswith(".hub.docker.com"):
        if len(path) >= 2 and path[0] == "_":
            name = path[1]
            rest = path[2:]
        elif len(path) >= 3 and path[0] in ("r", "repository"):
            name = f"{path[1]}/{path[2]}"
            rest = path[3:]
        else:
            return None
    elif host == "ghcr.io":
        if len(path) < 2:
            return None
        name, rest = "ghcr.io/" + "/".join(path[:2]), path[2:]
    elif host == "quay.io":
        if path[:1] == ["repository"] and len(path) >= 3:
            name, rest = f"quay.io/{path[1]}/{path[2]}", path[3:]
        elif len(path) >= 2 and path[0] not in ("search", "organization", "user", "tutorial"):
            name, rest = f"quay.io/{path[0]}/{path[1]}", path[2:]
        else:
            return None
    else:
        return None
    if host in ("ghcr.io", "quay.io") and path[0] != "repository" and ":" in "".join(path):
        return _valid(f"{host}/{'/'.join(path)}")  # an auto-linked reference with a tag/digest
    if len(rest) >= 2 and rest[0] in ("tags", "tag"):
        tag = tag or rest[1]
    if not all(_NAME.match(p) for p in name.split("/")[1 if "." in name.split("/")[0] else 0 :]):
        return None
    ref = f"{name.lower()}:{tag}" if tag else name.lower()
    return _valid(ref)


def find_image_reference(text: str) -> str | None:
    """The first image reference in ``text`` (see the module docstring), or None."""
    for match in _URL.finditer(text):
        ref = image_from_url(match.group(0))
        if ref is not None:
            return ref
    without_urls = _URL.sub(" ", text)
    for pattern in _CUES:
        for match in pattern.finditer(without_urls):
            ref = _valid(match.group("ref"))
            if ref is not None and ref.lower() not in {"image", "the", "a", "an"}:
                return ref
    for pattern in (_SHAPED, _DOMAIN_REF):
        for match in pattern.finditer(without_urls):
            if not re.search(r"[a-z]", re.split(r"[:@]", match.group("ref"))[0]):
                continue  # "10:30" is a time, not an image
            ref = _valid(match.group("ref"))
            if ref is not None:
                return ref
    return None
