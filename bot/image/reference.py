"""Image references (``nginx``, ``ghcr.io/o/app:1.2@sha256:…``) parsed and normalised
the way the Docker CLI does (the grammar of the distribution ``reference`` package).

Grammar (ASCII only)::

    reference   := name [ ":" tag ] [ "@" digest ]
    name        := [ domain "/" ] path-component ( "/" path-component )*
    domain      := host [ ":" port ]        host := domain-name | "[" ipv6 "]"
    domain-name := component ( "." component )*
    component   := [a-zA-Z0-9] ( [a-zA-Z0-9-]* [a-zA-Z0-9] )?
    path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag         := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest      := algorithm ":" hex   (sha256: 64, sha384: 96, sha512: 128 lowercase hex)

The first ``/``-separated component is a registry domain only when it contains ``.`` or
``:`` or is ``localhost``; otherwise the registry is Docker Hub (``docker.io``), where a
one-component name gets the ``library/`` prefix. ``index.docker.io`` means ``docker.io``.
The full normalised name (domain + "/" + path) may be at most 255 characters. Without tag
and digest the tag is ``latest``. (Newer Docker versions also treat a first component with
upper-case letters as a domain; dockwise keeps the older rule so ``MyUser/app`` gets the
clearer "must be lowercase" error instead of a lookup of a host called ``MyUser``.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAINS = frozenset({"index.docker.io"})
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST_ALGORITHM_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*")
_SHOWN = 80  # longest piece of user input quoted back in an error


def _quote(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalised reference. ``tag`` is ``latest`` when neither tag nor digest was given;
    with only a digest, ``tag`` is None."""

    domain: str  # "docker.io", "ghcr.io", "localhost:5000", "[::1]:5000"
    path: str  # "library/nginx"
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        return self.path

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The short name the Docker CLI shows: ``nginx``, ``user/app``, ``ghcr.io/o/app``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        if self.path.startswith(OFFICIAL_PREFIX) and "/" not in self.path[len(OFFICIAL_PREFIX) :]:
            return self.path[len(OFFICIAL_PREFIX) :]
        first = self.path.split("/", 1)[0]
        if "/" in self.path and ("." in first or first == "localhost"):
            return self.name  # would read as a registry host without the domain
        return self.path

    @property
    def familiar(self) -> str:
        return self.familiar_name + self._suffix()

    @property
    def reference(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest if known, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def _suffix(self) -> str:
        suffix = f":{self.tag}" if self.tag else ""
        return suffix + (f"@{self.digest}" if self.digest else "")

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, self.tag, digest)

    def __str__(self) -> str:
        return self.name + self._suffix()


def validate_digest(text: str) -> str:
    """Check ``algorithm:hex``; returns it unchanged or raises InvalidReference."""
    algorithm, sep, hex_part = text.partition(":")
    if not sep or not _DIGEST_ALGORITHM_RE.fullmatch(algorithm):
        raise InvalidReference(f"invalid digest {_quote(text)}: expected algorithm:hex")
    expected = _DIGEST_HEX_LENGTHS.get(algorithm)
    if expected is None:
        raise InvalidReference(
            f"invalid digest {_quote(text)}: unsupported algorithm {_quote(algorithm)} "
            "(use sha256, sha384 or sha512)"
        )
    if len(hex_part) != expected or not re.fullmatch(r"[a-f0-9]+", hex_part):
        raise InvalidReference(
            f"invalid digest {_quote(text)}: {algorithm} needs {expected} lowercase hex digits"
        )
    return text


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_DOMAIN, name
    if domain in LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse_reference(text: str) -> Reference:
    """Parse and normalise ``text``; raises ``InvalidReference`` with a one-line reason."""
    if not isinstance(text, str):
        raise InvalidReference("empty reference")
    text = text.strip()
    if not text:
        raise InvalidReference("empty reference")
    if _IDENTIFIER_RE.fullmatch(text.removeprefix("sha256:")):
        raise InvalidReference(
            f"{_quote(text)} looks like an image ID, not a name: only a local Docker Engine "
            "knows image IDs (use --source docker), else name it as repository[:tag] or "
            "repository@sha256:…"
        )
    remainder, at, digest = text.partition("@")
    if at:
        validate_digest(digest)
    tag: str | None = None
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            why = (
                "too long (max 128 characters)"
                if len(tag) > 128
                else "use letters, digits, '_', '.' and '-', not starting with '.' or '-'"
            )
            raise InvalidReference(f"invalid tag {_quote(tag)}: {why}")
    if not remainder:
        raise InvalidReference(f"invalid reference {_quote(text)}: missing repository name")
    domain, path = _split_domain(remainder)
    if not _DOMAIN_RE.fullmatch(domain):
        raise InvalidReference(f"invalid registry host {_quote(domain)}")
    if path.lower() != path:
        raise InvalidReference(f"repository name must be lowercase: {_quote(path)}")
    for component in path.split("/"):
        if not component:
            raise InvalidReference(f"invalid repository name {_quote(path)}: empty path component")
        if not _PATH_COMPONENT_RE.fullmatch(component):
            raise InvalidReference(
                f"invalid repository name component {_quote(component)}: use a-z, 0-9 and "
                "separators '.', '_', '__' or '-' between them"
            )
    name_length = len(domain) + 1 + len(path)
    if name_length > NAME_MAX:
        raise InvalidReference(f"name too long ({name_length} > {NAME_MAX})")
    if tag is None and not at:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest if at else None)


# --------------------------------------------------------------------------- what users paste

#: A full image ID (``sha256:`` + 64 hex, or the 64 hex alone) or a short one (12 to 63 hex
#: digits, as ``docker images`` prints them). Only a Docker Engine knows image IDs.
_IMAGE_ID_RE = re.compile(r"(?:sha256:[a-f0-9]{64}|[a-f0-9]{64})")
_SHORT_ID_RE = re.compile(r"(?:sha256:)?[a-f0-9]{12,63}")
_CHAT_LINK_RE = re.compile(r"^<([^<>|\s]+)(?:\|([^<>]*))?>$")  # a chat link: <target|label>
_HUB_WEB_HOSTS = frozenset({"hub.docker.com", "www.hub.docker.com"})
_CLIENTS = frozenset({"docker", "podman", "nerdctl", "sudo"})
# ``docker run`` / ``pull`` / ``create`` options that take a separate value (``-e X``).
_VALUED_OPTIONS = frozenset(
    {
        "-e", "--env", "--env-file", "-p", "--publish", "-v", "--volume", "--mount", "--name",
        "-w", "--workdir", "-u", "--user", "--platform", "--network", "--net", "--entrypoint",
        "-l", "--label", "-m", "--memory", "--cpus", "-h", "--hostname", "--restart",
        "--add-host", "--device", "--cap-add", "--cap-drop", "--security-opt", "--tmpfs",
        "--log-driver", "--log-opt", "--pull", "--shm-size", "--ulimit", "--gpus", "--ipc",
        "--pid", "--dns", "--expose", "--health-cmd", "--stop-signal", "--runtime",
    }
)  # fmt: skip
_IMAGE_VERBS = frozenset({"pull", "run", "create", "inspect", "history", "save"})


def looks_like_image_id(text: str) -> bool:
    """``sha256:<64 hex>``, 64 hex digits, or a short ID of 12 to 63 hex digits."""
    return bool(_IMAGE_ID_RE.fullmatch(text) or _SHORT_ID_RE.fullmatch(text))


def is_full_image_id(text: str) -> bool:
    """``sha256:<64 hex>`` or 64 hex digits: never a repository name."""
    return bool(_IMAGE_ID_RE.fullmatch(text))


def _from_command(words: list[str], original: str) -> str:
    """The image operand of a pasted ``docker pull nginx:1.27`` (or run/create/inspect),
    skipping options the way the docker CLI does."""
    while words and words[0].lower() in _CLIENTS:
        words = words[1:]
    if words and words[0].lower() in ("image", "container"):
        words = words[1:]
    if not words or words[0].lower() not in _IMAGE_VERBS:
        raise InvalidReference(
            f"{_quote(original)} is a command, not an image name: paste just the image, "
            "e.g. nginx:1.27"
        )
    rest = iter(words[1:])
    for word in rest:
        if word.startswith("-"):
            if word in _VALUED_OPTIONS:
                next(rest, None)
            continue
        return word
    raise InvalidReference(f"{_quote(original)} names no image: paste the image, e.g. nginx:1.27")


def _from_url(text: str) -> str:
    """An image named by a web address: Docker Hub pages, ``quay.io/repository/…``,
    ``github.com/<owner>/<repo>/pkgs/container/<name>``, or ``https://registry/path``."""
    import urllib.parse

    parts = urllib.parse.urlsplit(text if "://" in text else "https://" + text)
    host = (parts.hostname or "").lower()
    netloc = parts.netloc.lower().rpartition("@")[2]  # never keep pasted credentials
    segments = [s for s in parts.path.split("/") if s]
    if host in _HUB_WEB_HOSTS:
        if len(segments) >= 2 and segments[0] == "_":
            return segments[1]
        if len(segments) >= 3 and segments[0] in ("r", "repository"):
            return f"{segments[1]}/{segments[2]}"
        if len(segments) >= 4 and segments[0] == "layers":  # layers/<ns>/<name>/<tag>/…
            ns, name, tag = segments[1], segments[2], segments[3]
            return f"{name if ns in ('_', 'library') else ns + '/' + name}:{tag}"
        raise InvalidReference(
            f"{_quote(text)} is a Docker Hub page but not an image's page: paste the image "
            "name, e.g. nginx or bitnami/redis"
        )
    if host == "quay.io" and len(segments) >= 3 and segments[0] == "repository":
        return f"quay.io/{segments[1]}/{segments[2]}"
    if host == "github.com" and len(segments) >= 5 and segments[2:4] == ["pkgs", "container"]:
        return f"ghcr.io/{segments[0]}/{segments[4]}".lower()
    if not segments:
        raise InvalidReference(
            f"{_quote(text)} names a registry but no image: add the repository, "
            f"e.g. {netloc or 'registry.example.com'}/team/app:1"
        )
    if segments[0] == "v2":  # an API URL: /v2/<name>/manifests/<tag>
        segments = segments[1:]
        if len(segments) >= 3 and segments[-2] == "manifests":
            return f"{netloc}/{'/'.join(segments[:-2])}" + (
                f"@{segments[-1]}" if ":" in segments[-1] else f":{segments[-1]}"
            )
    return f"{netloc}/{'/'.join(segments)}"


def from_paste(text: str) -> str:
    """Turn what a user pasted into chat into reference text (still to be parsed).

    Understands: surrounding backticks and quotes; chat auto-links ``<http://host/x|host/x>``
    (the label wins) and ``<https://…>``; pasted commands (``docker pull nginx:1.27``,
    ``docker run --rm -p 80:80 nginx``, ``podman pull …``); web addresses
    (``https://hub.docker.com/_/nginx`` -> ``nginx``, ``https://hub.docker.com/r/bitnami/redis``
    -> ``bitnami/redis``, ``https://ghcr.io/o/app:1`` -> ``ghcr.io/o/app:1``). Anything else
    is returned stripped. Raises ``InvalidReference`` (one line, with the fix) for a command
    or a Hub page that names no image."""
    cleaned = text.strip().strip("`'\"").strip()
    link = _CHAT_LINK_RE.match(cleaned)
    if link:
        cleaned = (link.group(2) or link.group(1)).strip()
    words = cleaned.split()
    if len(words) > 1 and words[0].lower() in _CLIENTS:
        cleaned = _from_command(words, cleaned)
    elif len(words) > 1:
        return cleaned  # left for parse_reference to refuse with its reason
    lowered = cleaned.lower()
    if "://" in cleaned or lowered.split("/", 1)[0] in _HUB_WEB_HOSTS:
        cleaned = _from_url(cleaned)
    return cleaned
