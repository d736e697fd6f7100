"""From a resolved image and its layer scans to ``ImageFacts`` (pure: no I/O).

The layers are stacked the way overlayfs does it: upper layers win, ``.wh.NAME`` deletes
NAME (and everything under it), ``.wh..wh..opq`` hides the lower contents of its directory,
and a non-directory replacing a directory hides what was under it. Paths are looked up
through symlinks *inside the image tree* (``/bin -> usr/bin``, ``/bin/sh -> dash``,
``etc/os-release -> ../usr/lib/os-release``), never on the host.

Wasted space follows dive's definition: every path (file, symlink, or whiteout) that occurs
in more than one layer costs the sum of all its occurrences, the last one included; a
whiteout costs nothing by itself. So a file written in one layer and deleted or rewritten in
a later one counts in full. One deliberate difference: dive books a *directory* whiteout on
the directory node, which never repeats, so ``rm -rf dir`` in a later layer shows no waste;
here a directory whiteout (or an opaque directory) deletes each file it hides, and those
files count like any other deleted file.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bot.image import parsers
from bot.image.facts import ImageFacts, LayerFact, OsInfo, PackageInfo, SizeInfo, Waste
from bot.image.layers import Captured, Entry, LayerScan, interest
from bot.image.redact import Redactor
from bot.image.source import ResolvedImage

MAX_SYMLINK_HOPS = 40
SHELLS = ("bin/sh", "bin/bash", "bin/ash", "bin/busybox")
ROOT_USERS = frozenset({"", "root", "0"})
BASE_LABEL = "org.opencontainers.image.base.name"
TOP_WASTE = 5


# --------------------------------------------------------------------------- the merged tree


@dataclass(slots=True)
class Tree:
    """The stacked filesystem: path -> (index of the layer that provides it, entry)."""

    entries: dict[str, tuple[int, Entry]] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)  # explicit and implied directories

    def _under(self, path: str) -> list[str]:
        if not path:
            return list(self.entries)
        prefix = path + "/"
        return [p for p in self.entries if p.startswith(prefix)]

    def _is_dir(self, path: str) -> bool:
        found = self.entries.get(path)
        return (found is not None and found[1].kind == "d") or (found is None and path in self.dirs)

    def hide_under(self, path: str) -> None:
        for p in self._under(path):
            del self.entries[p]
        prefix = path + "/"
        self.dirs = {d for d in self.dirs if not (not path or d.startswith(prefix))}

    def delete(self, path: str) -> None:
        if self._is_dir(path):
            self.hide_under(path)
        self.entries.pop(path, None)
        self.dirs.discard(path)

    def files_under(self, path: str) -> list[str]:
        return [p for p in self._under(path) if self.entries[p][1].kind != "d"]

    def apply(self, index: int, scan: LayerScan) -> None:
        for path in scan.opaque:
            self.hide_under(path)
        for path in scan.whiteouts:
            self.delete(path)
        for path, entry in scan.entries.items():
            if entry.kind != "d" and self._is_dir(path):
                self.hide_under(path)
            self.entries[path] = (index, entry)
            if entry.kind == "d":
                self.dirs.add(path)
            parent = path.rpartition("/")[0]
            while parent and parent not in self.dirs:
                self.dirs.add(parent)
                parent = parent.rpartition("/")[0]

    def resolve(self, path: str) -> str | None:
        """``path`` with every symlink component followed inside the tree; None for a loop."""
        queue = deque(path.split("/"))
        done: list[str] = []
        hops = 0
        while queue:
            part = queue.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = "/".join([*done, part])
            found = self.entries.get(candidate)
            if found is not None and found[1].kind == "l" and found[1].link is not None:
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    return None
                target = found[1].link
                if target.startswith("/"):
                    done = []
                queue.extendleft(reversed(target.split("/")))
                continue
            done.append(part)
        return "/".join(done)

    def file(self, path: str) -> tuple[str, int] | None:
        """(resolved path, layer index) when ``path`` leads to a regular file (or hard link)."""
        resolved = self.resolve(path)
        if resolved is None:
            return None
        found = self.entries.get(resolved)
        if found is None or found[1].kind not in ("f", "h"):
            return None
        return resolved, found[0]

    def children(self, directory: str) -> list[tuple[str, int]]:
        resolved = self.resolve(directory)
        if resolved is None:
            return []
        prefix = resolved + "/"
        return [
            (p, idx)
            for p, (idx, entry) in self.entries.items()
            if p.startswith(prefix) and "/" not in p[len(prefix) :] and entry.kind in ("f", "h")
        ]


def stack(scans: list[LayerScan]) -> Tree:
    tree = Tree()
    for index, scan in enumerate(scans):
        tree.apply(index, scan)
    return tree


def wasted_space(scans: list[LayerScan]) -> tuple[int, list[Waste], Tree]:
    """dive's wasted bytes, the costliest paths (largest first) and the stacked tree."""
    seen: dict[str, tuple[int, int, tuple[int, ...]]] = {}  # path -> (count, bytes, layers)

    def note(path: str, size: int, index: int) -> None:
        count, total, layers = seen.get(path, (0, 0, ()))
        seen[path] = (count + 1, total + size, (*layers, index))

    tree = Tree()
    for index, scan in enumerate(scans):
        for directory in scan.opaque:
            for path in tree.files_under(directory):
                note(path, 0, index)
        for path in scan.whiteouts:
            if tree._is_dir(path):
                for child in tree.files_under(path):
                    note(child, 0, index)
            else:
                note(path, 0, index)
        for path, entry in scan.entries.items():
            if entry.kind != "d":
                note(path, entry.size, index)
        tree.apply(index, scan)
    repeated = [Waste(p, total, layers) for p, (n, total, layers) in seen.items() if n > 1]
    repeated.sort(key=lambda w: (-w.size, w.path))
    return sum(w.size for w in repeated), repeated[:TOP_WASTE], tree


# --------------------------------------------------------------------------- content facts


def _captured(scans: list[LayerScan], hit: tuple[str, int] | None) -> Captured | None:
    if hit is None:
        return None
    path, index = hit
    return scans[index].files.get(path)


def find_os(tree: Tree, scans: list[LayerScan]) -> OsInfo | None:
    for path in parsers.OS_RELEASE_PATHS:
        found = _captured(scans, tree.file(path))
        if found is not None and isinstance(found.value, dict) and found.value:
            fields = found.value
            return OsInfo(fields.get("ID"), fields.get("VERSION_ID"), fields.get("PRETTY_NAME"))
    alpine = _captured(scans, tree.file(parsers.ALPINE_RELEASE))
    if alpine is not None and isinstance(alpine.value, str):
        return OsInfo("alpine", alpine.value or None, f"Alpine Linux v{alpine.value}".strip())
    debian = _captured(scans, tree.file(parsers.DEBIAN_VERSION))
    if debian is not None and isinstance(debian.value, str):
        return OsInfo("debian", debian.value or None, f"Debian GNU/Linux {debian.value}".strip())
    return None


def _count(found: Captured | None) -> int | None:
    return found.value if found is not None and isinstance(found.value, int) else None


def find_packages(tree: Tree, scans: list[LayerScan]) -> PackageInfo | None:
    status = tree.file(parsers.DPKG_STATUS)
    status_d = [
        child
        for child in tree.children(parsers.DPKG_STATUS_D)
        if interest(f"{parsers.DPKG_STATUS_D}/{child[0].rpartition('/')[2]}") is not None
    ]
    if status is not None or status_d:
        counts = [_count(_captured(scans, status))] if status is not None else []
        counts += [_count(_captured(scans, child)) for child in status_d]
        total = None if any(c is None for c in counts) else sum(c for c in counts if c)
        return PackageInfo("dpkg", total)
    apk = tree.file(parsers.APK_INSTALLED)
    if apk is not None:
        return PackageInfo("apk", _count(_captured(scans, apk)))
    for path in parsers.RPM_SQLITE_PATHS:
        rpm = tree.file(path)
        if rpm is not None:
            return PackageInfo("rpm", _count(_captured(scans, rpm)))
    return None


def find_shell(tree: Tree) -> str | None:
    for path in SHELLS:
        if tree.file(path) is not None:
            return "/" + path
    return None


# --------------------------------------------------------------------------- config facts

_BUILDKIT = re.compile(r"\s+# buildkit$")
_SHELL_FORM = re.compile(r"^(?:RUN\s+)?(?:\|\d+\s+.*?)?/bin/(?:ba)?sh -c\s+(?P<rest>.*)$", re.S)
_NOP = re.compile(r"^#\(nop\)\s*(?P<rest>.*)$", re.S)


def instruction(created_by: str) -> str:
    """A history line as the Dockerfile instruction a learner would recognise."""
    text = _BUILDKIT.sub("", created_by.strip())
    shell = _SHELL_FORM.match(text)
    if shell is None:
        return text
    rest = shell["rest"].strip()
    nop = _NOP.match(rest)
    return nop["rest"].strip() if nop else f"RUN {rest}"


def _strings(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return None


def _port_key(port: str) -> tuple[int, str]:
    number, _, proto = port.partition("/")
    return (int(number) if number.isdigit() else 1 << 20, proto)


def exposed_ports(raw: Any) -> list[str]:
    if not isinstance(raw, dict):
        return []
    ports = {p if "/" in p else f"{p}/tcp" for p in (str(k).strip() for k in raw) if p}
    return sorted(ports, key=_port_key)


def runs_as_root(user: str) -> bool:
    return user.strip().partition(":")[0] in ROOT_USERS


def layer_facts(resolved: ResolvedImage, scans: list[LayerScan]) -> list[LayerFact]:
    history = resolved.config.get("history")
    history = history if isinstance(history, list) else []
    out: list[LayerFact] = []
    next_layer = 0
    for item in history:
        if not isinstance(item, dict):
            continue
        created_by = instruction(str(item.get("created_by") or ""))
        if item.get("empty_layer") or next_layer >= len(resolved.layers):
            out.append(LayerFact(None, 0, created_by, True))
            continue
        blob = resolved.layers[next_layer]
        out.append(LayerFact(blob.digest, scans[next_layer].uncompressed, created_by, False))
        next_layer += 1
    for blob, scan in zip(resolved.layers[next_layer:], scans[next_layer:], strict=True):
        out.append(LayerFact(blob.digest, scan.uncompressed, "", False))
    return out


def image_facts(resolved: ResolvedImage, scans: list[LayerScan]) -> ImageFacts:
    """Everything but ``advice`` and ``text`` (see bot.image.render)."""
    if len(scans) != len(resolved.layers):
        raise ValueError("one scan per layer is required")
    wasted, waste, tree = wasted_space(scans)
    os_info = find_os(tree, scans)
    packages = find_packages(tree, scans)
    shell_path = find_shell(tree)

    cfg = resolved.config.get("config")
    cfg = cfg if isinstance(cfg, dict) else {}
    redactor = Redactor()
    env_raw = cfg.get("Env")
    env_items: list[Any] = env_raw if isinstance(env_raw, list) else []
    env, secret_names = redactor.env(str(item) for item in env_items)
    labels_raw = cfg.get("Labels")
    labels = redactor.labels(
        {str(k): str(v) for k, v in labels_raw.items()} if isinstance(labels_raw, dict) else {}
    )
    user = str(cfg.get("User") or "")
    sizes = [blob.size for blob in resolved.layers]
    compressed = None if any(s is None for s in sizes) else sum(s for s in sizes if s)
    created = resolved.config.get("created")
    base = labels.get(BASE_LABEL)
    return ImageFacts(
        reference=resolved.reference,
        source=resolved.source,
        digest=resolved.digest,
        platform=str(resolved.platform),
        platforms=[str(p) for p in resolved.platforms] or [str(resolved.platform)],
        created=str(created) if created else None,
        os=os_info,
        scratch=os_info is None and packages is None,
        packages=packages,
        shell=shell_path is not None,
        user=redactor.text(user),
        runs_as_root=runs_as_root(user),
        entrypoint=redactor.scrub(_strings(cfg.get("Entrypoint"))),
        cmd=redactor.scrub(_strings(cfg.get("Cmd"))),
        workdir=redactor.text(str(cfg.get("WorkingDir") or "")),
        exposed_ports=exposed_ports(cfg.get("ExposedPorts")),
        env=env,
        labels=redactor.scrub(labels),
        base_image=redactor.text(base) if base else None,
        layers=[
            LayerFact(lf.digest, lf.size, redactor.text(lf.created_by), lf.empty)
            for lf in layer_facts(resolved, scans)
        ],
        size=SizeInfo(compressed, sum(scan.uncompressed for scan in scans)),
        wasted_bytes=wasted,
        secret_env=secret_names,
        shell_path=shell_path,
        waste=[Waste(redactor.text(w.path), w.size, w.layers) for w in waste],
    )


__all__ = [
    "Tree",
    "exposed_ports",
    "find_os",
    "find_packages",
    "find_shell",
    "image_facts",
    "instruction",
    "layer_facts",
    "runs_as_root",
    "stack",
    "wasted_space",
]
