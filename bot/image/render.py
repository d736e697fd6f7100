"""``ImageFacts`` -> advice, a plain-language explanation and a chat ``Reply``.

The explanation ties the facts to the one idea learners miss: an image brings a *user
space* (files, a C library, maybe a package manager and a shell), never a kernel; every
container uses the host's kernel. FROM scratch images bring nothing but their own files.
"""

from __future__ import annotations

import re
from typing import Any

from bot.image.facts import ImageFacts, safe_text
from bot.reply import Fact, Reply, ReplyKind, Section, Source

MIB = 1024 * 1024
WASTE_ADVICE_BYTES = 1 * MIB  # below this, duplicated bytes are not worth a remark
FULL_DISTRO_PACKAGES = 100  # more installed packages than a -slim Debian/Ubuntu carries
LAYER_LINE_CHARS = 120
# Bounds on text that comes from the image (labels, ENV, history, paths, os-release): an
# image author controls it, so a reply never carries more than this of it.
MAX_LAYER_LINES = 60  # history lines in the Layers section
FACT_CHARS = 120  # one fact value (user, shell, base image, OS name)
MAX_PLATFORMS = 12  # platforms listed in the facts
MAX_SECRET_NAMES = 5  # ENV names named in the secrets advice
NAME_CHARS = 64  # one ENV name in advice
MAX_DATA_ITEMS = 50  # labels / env entries / cmd words kept in Reply.data
DATA_KEY_CHARS = 128
DATA_VALUE_CHARS = 512
DATA_LAYER_CHARS = 200  # one history line in Reply.data
GLIBC_DISTROS = frozenset({"debian", "ubuntu", "fedora", "rhel", "centos", "rocky", "almalinux"})
_BUILD_TOOLS = re.compile(
    r"\b(build-essential|build-base|gcc|g\+\+|clang|make|cmake|golang|rustc|cargo|"
    r"openjdk-\d+-jdk|maven|gradle|python3?-dev|musl-dev|libc6?-dev)\b"
)
_MANAGER_TOOL = {"dpkg": "apt/dpkg", "apk": "apk", "rpm": "dnf/rpm", "chisel": "chisel"}

DOCS = {
    "layers": Source(
        "Understanding the image layers (Docker docs)",
        "https://docs.docker.com/get-started/docker-concepts/building-images/understanding-image-layers/",
    ),
    "base": Source(
        "Base images (Docker docs)", "https://docs.docker.com/build/building/base-images/"
    ),
    "multi-stage": Source(
        "Multi-stage builds (Docker docs)", "https://docs.docker.com/build/building/multi-stage/"
    ),
    "best-practices": Source(
        "Docker build best practices", "https://docs.docker.com/build/building/best-practices/"
    ),
    "secrets": Source(
        "Build secrets (Docker docs)", "https://docs.docker.com/build/building/secrets/"
    ),
    "security": Source("Docker Engine security", "https://docs.docker.com/engine/security/"),
    "debug": Source(
        "docker debug (Docker docs)", "https://docs.docker.com/reference/cli/docker/debug/"
    ),
}


def clip(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters (ending in ... when cut), valid
    UTF-8 (undecodable bytes escaped, see bot.image.facts.safe_text)."""
    text = " ".join(safe_text(text).split())
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def human(size: int | None) -> str:
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover - the loop always returns


def short_name(reference: str) -> str:
    for prefix in ("docker.io/library/", "docker.io/"):
        if reference.startswith(prefix):
            return reference[len(prefix) :]
    return reference


def os_name(facts: ImageFacts) -> str | None:
    if facts.os is None:
        return None
    pretty = facts.os.pretty_name
    if pretty:
        pretty = clip(pretty, FACT_CHARS)
        return re.sub(r"\s*\([^)]*\)\s*$", "", pretty).strip() or pretty
    parts = [p for p in (facts.os.id, facts.os.version_id) if p]
    return clip(" ".join(parts), FACT_CHARS) or None


def _libc(facts: ImageFacts) -> str | None:
    if facts.os is None or facts.os.id is None:
        return None
    if facts.os.id == "alpine":
        return "musl"
    return "glibc" if facts.os.id in GLIBC_DISTROS else None


def _layer_instructions(facts: ImageFacts, indexes: tuple[int, ...]) -> list[str]:
    filesystem = [layer for layer in facts.layers if not layer.empty]
    out = []
    for index in indexes:
        if 0 <= index < len(filesystem):
            text = filesystem[index].created_by or f"layer {index + 1}"
            out.append(text if len(text) <= 60 else text[:57] + "...")
    return out


def _build_tools(facts: ImageFacts) -> list[str]:
    found: dict[str, None] = {}
    for layer in facts.layers:
        if layer.created_by.startswith("RUN"):
            for match in _BUILD_TOOLS.finditer(layer.created_by):
                found.setdefault(match.group(1), None)
    return list(found)


# --------------------------------------------------------------------------- advice


def advise(facts: ImageFacts) -> list[str]:
    advice: list[str] = []
    for name in facts.secret_env[:MAX_SECRET_NAMES]:
        name = clip(name, NAME_CHARS)
        advice.append(
            f"ENV {name} looks like a secret and is baked into the image config: anyone who "
            "can pull the image can read it (docker inspect). Pass it at run time or use "
            "build secrets instead, and rotate it."
        )
    if len(facts.secret_env) > MAX_SECRET_NAMES:
        advice.append(
            f"{len(facts.secret_env) - MAX_SECRET_NAMES} more ENV variables look like secrets."
        )
    labels = list(dict.fromkeys(f["name"] for f in facts.secrets if f["where"] == "label"))
    for key in labels[:MAX_SECRET_NAMES]:
        advice.append(
            f"Label {clip(key, NAME_CHARS)} holds a credential: labels ship in the image "
            "config for anyone who can pull it. Remove it and rotate the credential."
        )
    env_names = set(facts.secret_env)
    secret_steps = list(
        dict.fromkeys(
            int(f["name"]) for f in facts.secrets if f["where"] == "history" and f["name"].isdigit()
        )
    )
    for index in secret_steps[:MAX_SECRET_NAMES]:
        if 0 <= index < len(facts.layers):
            step = clip(facts.layers[index].created_by, 60)
            if env_names and step.startswith("ENV "):
                continue  # the ENV advice above already names it
            advice.append(
                f"Build step {index + 1} ({step}) has a credential in its command line: the "
                "image history keeps it (docker history). Use build secrets "
                "(`RUN --mount=type=secret`) and rotate it."
            )
    if not facts.user_found:
        advice.append(
            f"USER {clip(facts.user, FACT_CHARS)} is not defined in the image's /etc/passwd "
            "(or its group in /etc/group): containers fail to start. Create it in the image "
            "(`RUN useradd ...`) or use a numeric uid:gid."
        )
    if facts.runs_as_root:
        advice.append(
            "It runs as root. Add a user and switch to it (`RUN useradd ...` then `USER app`) "
            "so a compromised process has less power over the host kernel it shares."
        )
    count = facts.packages.count if facts.packages else None
    os_id = facts.os.id if facts.os else None
    if (
        os_id in ("debian", "ubuntu")
        and count is not None
        and count > FULL_DISTRO_PACKAGES
        and "slim" not in facts.reference
    ):
        advice.append(
            f"{count} packages from a full {os_name(facts)} user space: a -slim variant, a "
            "distroless base or a multi-stage build ships far fewer files (smaller, fewer CVEs)."
        )
    tools = _build_tools(facts)
    if tools:
        advice.append(
            f"Build tools are installed in the final image ({', '.join(tools[:4])}): build in "
            "one stage and copy only the result into a slim runtime stage (multi-stage build)."
        )
    if facts.wasted_bytes >= WASTE_ADVICE_BYTES:
        where: list[str] = []
        for waste in facts.waste[:2]:
            steps = "; ".join(_layer_instructions(facts, waste.layers))
            where.append(f"/{clip(waste.path, FACT_CHARS)} ({human(waste.size)}: {steps})")
        advice.append(
            f"{human(facts.wasted_bytes)} is wasted: files written in one layer and deleted or "
            f"rewritten in a later one still ship in the earlier layer. Biggest: "
            f"{', '.join(where)}. Create and clean up in the same RUN step."
        )
    if not facts.shell:
        advice.append(
            "There is no shell, so `docker exec -it <container> sh` will not work: use "
            "`docker debug <container>` or a :debug variant of the base image to poke around."
        )
    if os_id == "alpine":
        advice.append(
            "Alpine uses musl, not glibc: prebuilt binaries and Python wheels made for glibc "
            "may not run; build on Alpine or pick a Debian-based slim image."
        )
    return advice


# --------------------------------------------------------------------------- the explanation


_RUNTIME_NAMES = {"python": "Python", "node": "Node.js", "java": "Java"}
_KERNEL = "It has no kernel of its own: containers from it use the host's kernel."


def runtime_names(facts: ImageFacts) -> str:
    """``Python 3.12.7, Node.js 20.11.1`` (empty when none was found)."""
    return ", ".join(
        clip(f"{_RUNTIME_NAMES.get(r.name, r.name)} {r.version or ''}".strip(), 40)
        for r in facts.runtimes[:6]
    )


def describe(facts: ImageFacts) -> str:
    sentences: list[str] = []
    name = os_name(facts)
    kind = facts.userspace_kind()
    shell = clip(facts.shell_path or "", 40)
    if kind in ("distribution", "distroless"):
        parts = ["files"]
        libc = _libc(facts)
        parts.append(f"the {libc} C library" if libc else "a C library")
        if facts.packages is not None:
            tool = _MANAGER_TOOL.get(facts.packages.manager, facts.packages.manager)
            if facts.packages.manager == "chisel":
                parts.append("a chisel manifest of deb packages but no dpkg or apt")
            elif kind == "distroless" and facts.packages.manager == "dpkg":
                parts.append("a dpkg package list but no apt")
            elif kind == "distroless":
                parts.append(f"a {facts.packages.manager} package list but no package manager")
            else:
                parts.append(tool)
        parts.append(f"a shell at {shell}" if shell else "no shell")
        whose = f"{name}'s user space" if name else "a Linux distribution's user space"
        style = ", distroless-style" if kind == "distroless" else ""
        sentences.append(f"This image carries {whose}{style} ({', '.join(parts)}). {_KERNEL}")
    elif kind == "busybox":
        sentences.append(
            "This image has no Linux distribution: its user space is BusyBox, one binary "
            "that provides sh, ls and the other basic commands"
            + (f" (the shell is {shell})" if shell else "")
            + f", plus the image's own files. {_KERNEL}"
        )
    elif kind == "runtime":
        sentences.append(
            f"This image has no Linux distribution: only "
            f"{'language runtimes' if len(facts.runtimes) > 1 else 'a language runtime'} "
            f"({runtime_names(facts)}) and the image's own files"
            + (f", with a shell at {shell}" if shell else ", no shell")
            + f". {_KERNEL}"
        )
    elif kind == "files":
        sentences.append(
            f"This image has no Linux distribution: just its own files, with a shell at "
            f"{shell}. {_KERNEL}"
        )
    else:
        sentences.append(
            "This image has no OS user space at all: just your files. It runs directly on "
            "the host kernel, so its program must bring everything it needs (typically one "
            "statically linked binary)."
        )
    if facts.runtimes and kind != "runtime":
        sentences.append(f"Language runtimes: {runtime_names(facts)}.")
    if facts.packages is not None and facts.packages.count is not None:
        if facts.packages.manager == "chisel":
            sentences.append(
                f"{facts.packages.count} deb packages were cut into it (chisel manifest)."
            )
        else:
            sentences.append(f"{facts.packages.count} packages are installed.")
    match = facts.base_match
    if match and not facts.base_image:
        base = clip(short_name(str(match["reference"])), FACT_CHARS)
        layers = int(match["layers"])
        sentences.append(
            f"Its bottom {layers} layer{'s are' if layers != 1 else ' is'} identical to "
            f"{base}, which dockwise has seen before: that is most likely its base image"
            + (" (other images share those layers too)." if match["confidence"] != "high" else ".")
        )
    sentences.append(f"It runs as {_who(facts)}.")
    filesystem = sum(1 for layer in facts.layers if not layer.empty)
    sentences.append(
        f"It is {filesystem} layer{'s' if filesystem != 1 else ''}, "
        f"{human(facts.size.uncompressed)} unpacked"
        + (f" ({human(facts.size.compressed)} to download)." if facts.size.compressed else ".")
    )
    return " ".join(sentences)


def _who(facts: ImageFacts) -> str:
    user = clip(facts.user, FACT_CHARS)
    if facts.runs_as_root:
        name = facts.user.strip().partition(":")[0]
        if name in ("", "root", "0"):
            return "root"
        return f"root (USER {user} has uid 0 in the image's /etc/passwd)"
    if not facts.user_found:
        return (
            f"user {user}, which the image's /etc/passwd or /etc/group does not define, so "
            '`docker run` fails with "unable to find user"'
        )
    return f"user {user}" + (f" (uid {facts.uid})" if facts.uid is not None else "")


def _user_fact(facts: ImageFacts) -> str:
    user = clip(facts.user, FACT_CHARS)
    if facts.runs_as_root:
        return (
            "root"
            if facts.user.strip().partition(":")[0] in ("", "root", "0")
            else (f"{user} (uid 0: root)")
        )
    return user if facts.user_found else f"{user} (not in /etc/passwd: will not start)"


def finish(facts: ImageFacts) -> ImageFacts:
    """Fill ``advice`` and ``text`` from the other facts (idempotent)."""
    facts.advice = advise(facts)
    facts.text = describe(facts)
    return facts


def _layers_section(facts: ImageFacts) -> str:
    lines = []
    for layer in facts.layers[:MAX_LAYER_LINES]:
        text = clip(layer.created_by or "(no history)", LAYER_LINE_CHARS)
        size = "-" if layer.empty else human(layer.size)
        lines.append(f"- `{size}` {text}")
    hidden = len(facts.layers) - MAX_LAYER_LINES
    if hidden > 0:
        lines.append(f"- ... and {hidden} more history entries")
    return "\n".join(lines) or "(no layers)"


def _platforms(platforms: list[str]) -> str:
    shown = [clip(p, 40) for p in platforms[:MAX_PLATFORMS]]
    if len(platforms) > MAX_PLATFORMS:
        shown.append(f"and {len(platforms) - MAX_PLATFORMS} more")
    return ", ".join(shown)


def _bounded_items(items: dict[str, str]) -> dict[str, str]:
    return {
        clip(k, DATA_KEY_CHARS): clip(v, DATA_VALUE_CHARS)
        for k, v in list(items.items())[:MAX_DATA_ITEMS]
    }


def _bounded_words(words: list[str] | None) -> list[str] | None:
    if words is None:
        return None
    return [clip(w, DATA_VALUE_CHARS) for w in words[:MAX_DATA_ITEMS]]


def bounded_data(facts: ImageFacts) -> dict[str, Any]:
    """``facts.to_json()`` with the image author's free text bounded (labels, ENV, history,
    command, names), so a hostile image cannot make a reply (or its data) huge."""
    data = facts.to_json()
    data["labels"] = _bounded_items(facts.labels)
    data["env"] = _bounded_items(facts.env)
    data["entrypoint"] = _bounded_words(facts.entrypoint)
    data["cmd"] = _bounded_words(facts.cmd)
    data["exposed_ports"] = [clip(p, 40) for p in facts.exposed_ports[:MAX_DATA_ITEMS]]
    for key in ("user", "workdir", "base_image", "created"):
        if isinstance(data.get(key), str):
            data[key] = clip(data[key], DATA_VALUE_CHARS)
    for layer in data["layers"]:
        layer["created_by"] = clip(str(layer.get("created_by") or ""), DATA_LAYER_CHARS)
    os_data = data.get("os")
    if isinstance(os_data, dict):
        for key, value in os_data.items():
            if isinstance(value, str):
                os_data[key] = clip(value, DATA_VALUE_CHARS)
    return data


def _related(facts: ImageFacts) -> tuple[list[str], list[Source]]:
    related = ["kernel-sharing"]
    sources = [DOCS["layers"]]
    if facts.scratch:
        related += ["from-scratch"]
        sources.append(DOCS["base"])
    else:
        related += ["why-base-image", "inspect-image-os", "base-image-choice"]
        sources.append(DOCS["base"])
    if facts.os is not None and facts.os.id == "alpine":
        related.append("musl-vs-glibc")
    if facts.runs_as_root:
        related.append("root-and-isolation")
        sources.append(DOCS["security"])
    if facts.wasted_bytes >= WASTE_ADVICE_BYTES or len(facts.layers) > 1:
        related.append("layers-and-size")
    if _build_tools(facts) or facts.wasted_bytes >= WASTE_ADVICE_BYTES:
        related.append("multi-stage")
        sources.append(DOCS["multi-stage"])
    if facts.secret_env:
        related.append("secrets-in-images")
        sources.append(DOCS["secrets"])
    if not facts.shell:
        sources.append(DOCS["debug"])
    return list(dict.fromkeys(related)), list(dict.fromkeys(sources))


def _base_fact(facts: ImageFacts) -> str:
    if facts.base_image:
        return clip(facts.base_image, FACT_CHARS)
    match = facts.base_match
    if match:
        name = clip(short_name(str(match["reference"])), FACT_CHARS)
        return f"{name} (same bottom {match['layers']} layers; {match['confidence']} confidence)"
    return "unknown"


_NO_OS = {
    "busybox": "none (BusyBox userland)",
    "runtime": "none (language runtime only)",
    "files": "none (own files and a shell)",
    "distroless": "unknown distribution (package list only)",
}


def render(facts: ImageFacts) -> Reply:
    if not facts.text:
        finish(facts)
    name = short_name(facts.reference)
    distro = os_name(facts)
    kind = facts.userspace_kind()
    title = {
        "busybox": f"{name}: BusyBox user space, no distribution",
        "runtime": f"{name}: {runtime_names(facts)}"
        f" runtime{'s' if len(facts.runtimes) > 1 else ''}, no distribution",
        "files": f"{name}: no distribution, a shell and its own files",
    }.get(kind, f"{name}: no OS user space (scratch)")
    if distro and kind in ("distribution", "distroless"):
        title = f"{name}: {distro} user space"
    packages = "none"
    if facts.packages is not None:
        count = facts.packages.count
        packages = (
            f"{count if count is not None else 'unknown number of'} ({facts.packages.manager})"
        )
    extra = [Fact("Runtimes", clip(runtime_names(facts), FACT_CHARS))] if facts.runtimes else []
    fact_list = [
        Fact("OS", distro or _NO_OS.get(kind, "none (scratch)")),
        Fact("Packages", packages),
        Fact("Shell", clip(facts.shell_path or ("yes" if facts.shell else "none"), FACT_CHARS)),
        Fact("User", _user_fact(facts)),
        Fact(
            "Size",
            f"{human(facts.size.uncompressed)} unpacked, {human(facts.size.compressed)} compressed",
        ),
        Fact(
            "Layers",
            f"{sum(1 for layer in facts.layers if not layer.empty)} "
            f"({len(facts.layers)} history entries)",
        ),
        Fact("Wasted", human(facts.wasted_bytes)),
        Fact("Platforms", _platforms(facts.platforms)),
        Fact("Base image", _base_fact(facts)),
        *extra,
    ]
    sections = [Section("Layers", _layers_section(facts))]
    if facts.advice:
        sections.append(Section("Advice", "\n".join(f"- {line}" for line in facts.advice)))
    related, sources = _related(facts)
    return Reply(
        kind=ReplyKind.IMAGE,
        title=title,
        body=facts.text,
        facts=fact_list,
        sections=sections,
        sources=sources,
        topic=None,
        related=related,
        data=bounded_data(facts),
    )


render_reply = render  # the name bot/cli.py imports

__all__ = [
    "advise",
    "bounded_data",
    "clip",
    "describe",
    "finish",
    "human",
    "os_name",
    "render",
    "render_reply",
    "short_name",
]
