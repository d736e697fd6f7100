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

from sortedcontainers import SortedList

from bot.image.detectors import DETECTORS, Detector
from bot.image.facts import (
    ImageFacts,
    LayerFact,
    OsInfo,
    PackageInfo,
    RuntimeInfo,
    SizeInfo,
    Waste,
    safe_text,
)
from bot.image.layers import Entry, LayerScan
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
    """The stacked filesystem: path -> (index of the layer that provides it, entry).

    Every name (entries and implied directories) is also kept in a sorted index, so hiding
    a directory (whiteout, opaque dir, a file replacing a directory) costs the log of the
    tree size plus what it hides: the names under ``dir`` are one contiguous run,
    ``dir + "/"`` <= name < ``dir + "0"`` ("0" follows "/"). New names wait in a pending
    list and join the index in one batch before the next query, so stacking a layer of n
    files costs one sort, not n insertions. Whiteouts stay near-linear on images with
    hundreds of thousands of files.

    ``origins`` maps each hard link to where its bytes are: (layer index, path), following
    chains of links, links to files of earlier layers and symlinked directories on the way
    to the target (as the runtime's ``link(2)`` on the merged tree does).
    """

    entries: dict[str, tuple[int, Entry]] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)  # explicit and implied directories
    origins: dict[str, tuple[int, str]] = field(default_factory=dict)
    _index: SortedList[str] = field(default_factory=SortedList)
    _pending: list[str] = field(default_factory=list)

    def _known(self, name: str) -> bool:
        return name in self.entries or name in self.dirs

    def _flush(self) -> None:
        if self._pending:
            self._index.update(self._pending)
            self._pending = []

    def _range(self, path: str) -> tuple[int, int]:
        """Index positions of the names strictly under ``path`` ("" is the root)."""
        self._flush()
        if not path:
            return 0, len(self._index)
        return self._index.bisect_left(path + "/"), self._index.bisect_left(path + "0")

    def _under(self, path: str) -> list[str]:
        start, stop = self._range(path)
        return [p for p in self._index.islice(start, stop) if p in self.entries]

    def _is_dir(self, path: str) -> bool:
        found = self.entries.get(path)
        return (found is not None and found[1].kind == "d") or (found is None and path in self.dirs)

    def hide_under(self, path: str) -> None:
        start, stop = self._range(path)
        if start >= stop:
            return
        for p in self._index.islice(start, stop):
            self.entries.pop(p, None)
            self.origins.pop(p, None)
            self.dirs.discard(p)
        del self._index[start:stop]

    def delete(self, path: str) -> None:
        if self._is_dir(path):
            self.hide_under(path)
        if not self._known(path):
            return
        self.entries.pop(path, None)
        self.origins.pop(path, None)
        self.dirs.discard(path)
        self._flush()
        self._index.discard(path)

    def files_under(self, path: str) -> list[str]:
        return [p for p in self._under(path) if self.entries[p][1].kind != "d"]

    def _origin(self, target: str) -> tuple[int, str] | None:
        resolved = self.resolve(target)
        found = self.entries.get(resolved) if resolved is not None else None
        if found is None or resolved is None:
            return None
        if found[1].kind == "f":
            return found[0], resolved
        if found[1].kind == "h":
            return self.origins.get(resolved)
        return None

    def apply(self, index: int, scan: LayerScan) -> None:
        for path in scan.opaque:
            self.hide_under(path)
        for path in scan.whiteouts:
            self.delete(path)
        entries, dirs, pending = self.entries, self.dirs, self._pending
        for path, entry in scan.entries.items():
            kind = entry.kind
            if kind != "d" and self._is_dir(path):
                self.hide_under(path)
                pending = self._pending
            origin = self._origin(entry.link) if kind == "h" and entry.link is not None else None
            if path not in entries and path not in dirs:
                pending.append(path)
            entries[path] = (index, entry)
            if origin is not None:
                self.origins[path] = origin
            elif self.origins:
                self.origins.pop(path, None)
            if kind == "d":
                dirs.add(path)
            parent = path.rpartition("/")[0]
            while parent and parent not in dirs:
                if parent not in entries:
                    pending.append(parent)
                dirs.add(parent)
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
        """(path of the bytes, layer index) when ``path`` leads to a regular file: symlinks
        are followed, and a hard link leads to the file it shares bytes with."""
        resolved = self.resolve(path)
        if resolved is None:
            return None
        found = self.entries.get(resolved)
        if found is None:
            return None
        if found[1].kind == "f":
            return resolved, found[0]
        if found[1].kind == "h":
            origin = self.origins.get(resolved)
            return (origin[1], origin[0]) if origin is not None else None
        return None

    def children(self, directory: str) -> list[tuple[str, str]]:
        """(name, path) of the regular files and hard links directly in ``directory``."""
        resolved = self.resolve(directory)
        if resolved is None:
            return []
        prefix = resolved + "/"
        return [
            (p[len(prefix) :], p)
            for p in self._under(resolved)
            if "/" not in p[len(prefix) :] and self.entries[p][1].kind in ("f", "h")
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


@dataclass(frozen=True, slots=True)
class Found:
    """One detector's fact, read from the file at ``path`` (as the image names it)."""

    detector: Detector
    path: str
    fact: Any


def _paths(tree: Tree, pattern: str, captured: set[str]) -> list[str]:
    """The image paths a detector pattern names. A ``*`` in the last component lists that
    directory (through links); any glob also takes the files captured under a matching
    name (the layer reader matched them while streaming)."""
    if "*" not in pattern:
        return [pattern]
    base = _glob_re(pattern)
    found = sorted(p for p in captured if base.fullmatch(p))
    directory, _, name = pattern.rpartition("/")
    if "*" not in directory:
        last = _glob_re(name)
        found += [f"{directory}/{n}" for n, _ in tree.children(directory) if last.fullmatch(n)]
    return list(dict.fromkeys(found))


def _glob_re(pattern: str) -> re.Pattern[str]:
    return re.compile("[^/]*".join(re.escape(part) for part in pattern.split("*")))


def detect(tree: Tree, scans: list[LayerScan]) -> list[Found]:
    """Every fact the registered detectors find, in registration order. Each wanted path is
    looked up through links; the value is the one captured for the file that holds the
    bytes, by the same detector."""
    captured: dict[str, set[str]] = {}
    for scan in scans:
        for path, item in scan.files.items():
            captured.setdefault(item.kind, set()).add(path)
    found: list[Found] = []
    for detector in DETECTORS:
        seen: set[tuple[int, str]] = set()
        mine_captured = captured.get(detector.name, set())
        for pattern in detector.paths:
            for path in _paths(tree, pattern, mine_captured):
                if detector.skip is not None and detector.skip(path):
                    continue
                hit = tree.file(path)
                if hit is None or (hit[1], hit[0]) in seen:
                    continue
                seen.add((hit[1], hit[0]))
                held = scans[hit[1]].files.get(hit[0])
                mine = held is not None and held.kind == detector.name
                value = held.value if held is not None and mine else None
                fact = detector.yields(value, path)
                if detector.fact == "runtime" and fact is None:
                    continue
                found.append(Found(detector, path, fact))
    return found


def find_os(found: list[Found]) -> OsInfo | None:
    for item in found:
        if item.detector.fact == "os" and isinstance(item.fact, dict):
            fact = item.fact
            return OsInfo(fact.get("id"), fact.get("version_id"), fact.get("pretty_name"))
    return None


def find_packages(found: list[Found]) -> PackageInfo | None:
    """The first package manager found (registration order). Additive databases of that
    manager add up; otherwise its first database counts. Count None: a database exists but
    could not be read."""
    dbs = [f for f in found if f.detector.fact == "packages" and isinstance(f.fact, dict)]
    if not dbs:
        return None
    manager = dbs[0].detector.manager
    mine = [f for f in dbs if f.detector.manager == manager]
    additive = mine[0].detector.additive
    mine = [f for f in mine if f.detector.additive] if additive else mine[:1]
    counts = [f.fact.get("count") for f in mine]
    total = None if any(c is None for c in counts) else sum(int(c) for c in counts)
    return PackageInfo(
        str(mine[0].fact["manager"]), total, str(mine[0].fact.get("database") or "") or None
    )


RUNTIME_ENV = {"python": "PYTHON_VERSION", "node": "NODE_VERSION", "java": "JAVA_VERSION"}
BUSYBOX = ("bin/busybox", "usr/bin/busybox", "sbin/busybox")
PACKAGE_TOOLS = (
    "usr/bin/dpkg", "usr/bin/apt-get", "sbin/apk", "usr/bin/apk", "usr/bin/rpm", "bin/rpm",
    "usr/bin/microdnf", "usr/bin/dnf", "usr/bin/yum", "usr/bin/zypper",
)  # fmt: skip


def find_runtimes(found: list[Found], env: dict[str, str]) -> list[RuntimeInfo]:
    """Language runtimes, one per (name, home). A version the files do not give (or give
    only as major.minor) is taken from the official images' ENV (PYTHON_VERSION, ...) when
    it agrees with the files."""
    out: dict[tuple[str, str], RuntimeInfo] = {}
    for item in found:
        if item.detector.fact != "runtime" or not isinstance(item.fact, dict):
            continue
        name, version, home = item.fact["name"], item.fact.get("version"), item.fact["path"]
        declared = env.get(RUNTIME_ENV.get(name, ""), "")
        if declared and (not version or declared.startswith(f"{version}.")):
            version = declared
        key = (name, home)
        if key not in out or (version and not out[key].version):
            out[key] = RuntimeInfo(name, version or None, home)
    by_name: dict[str, list[RuntimeInfo]] = {}
    for runtime in out.values():
        by_name.setdefault(runtime.name, []).append(runtime)
    result: list[RuntimeInfo] = []
    for runtimes in by_name.values():  # a versioned find beats a bare binary of that name
        versioned = [r for r in runtimes if r.version]
        result += versioned or runtimes[:1]
    return result


def find_userspace(
    tree: Tree,
    os_info: OsInfo | None,
    packages: PackageInfo | None,
    shell_path: str | None,
    runtimes: list[RuntimeInfo],
) -> str:
    """What kind of user space the image brings (see ``ImageFacts.userspace``)."""
    if os_info is not None or packages is not None:
        tool = any(tree.file(p) is not None for p in PACKAGE_TOOLS)
        return "distribution" if tool or shell_path else "distroless"
    if any(tree.file(p) is not None for p in BUSYBOX):
        return "busybox"
    if runtimes:
        return "runtime"
    return "files" if shell_path else "static"


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


def runs_as_root(user: str, passwd: dict[str, Any] | None = None) -> bool:
    """True when ``USER`` makes the process uid 0 (see ``resolve_user``)."""
    if passwd is None:
        return user.strip().partition(":")[0] in ROOT_USERS
    return resolve_user(user, passwd, None)[0] == 0


def resolve_user(
    user: str, passwd: dict[str, Any] | None, groups: dict[str, Any] | None
) -> tuple[int | None, int | None, bool]:
    """``USER name|uid[:group|gid]`` as the runtime resolves it in the image's own
    /etc/passwd and /etc/group: (uid, gid, found). An empty USER is root (0, 0). A numeric
    user needs no passwd entry; a *name* missing from passwd makes ``docker run`` fail
    ("unable to find user"), so uid is None and found False. uid 0 is root whatever the
    name (``toor:x:0:0``)."""
    name, _, group = user.strip().partition(":")
    passwd = passwd or {}
    entry = passwd.get(name)
    uid: int | None
    gid: int | None
    if not name:
        uid, gid, found = 0, 0, True
    elif name.isdigit():
        uid = int(name)
        by_uid = next((v for v in passwd.values() if _ids(v)[0] == uid), None)
        gid = _ids(by_uid)[1] if by_uid is not None else 0
        found = True
    elif entry is not None:
        uid, gid = _ids(entry)
        found = uid is not None
    else:
        uid, gid, found = (0, 0, True) if name == "root" and not passwd else (None, None, False)
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            named = (groups or {}).get(group)
            gid = named if isinstance(named, int) else None
            found = found and gid is not None
    return uid, gid, found


def _ids(entry: Any) -> tuple[int | None, int | None]:
    if isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, int) for x in entry):
        return entry[0], entry[1]
    return None, None


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
    found = detect(tree, scans)
    os_info = find_os(found)
    packages = find_packages(found)
    passwd = next((f.fact for f in found if f.detector.fact == "users" and f.fact), None)
    groups = next((f.fact for f in found if f.detector.fact == "groups" and f.fact), None)
    shell_path = find_shell(tree)

    cfg = resolved.config.get("config")
    cfg = cfg if isinstance(cfg, dict) else {}
    redactor = Redactor()
    env_raw = cfg.get("Env")
    env_items: list[Any] = env_raw if isinstance(env_raw, list) else []
    env, secret_names = redactor.env(str(item) for item in env_items)
    runtimes = find_runtimes(found, env)
    labels_raw = cfg.get("Labels")
    labels = redactor.labels(
        {str(k): str(v) for k, v in labels_raw.items()} if isinstance(labels_raw, dict) else {}
    )
    user = str(cfg.get("User") or "")
    uid, gid, user_found = resolve_user(user, passwd, groups)
    unreadable = any(f.detector.fact in ("users", "groups") and f.fact is None for f in found)
    if not user_found and unreadable:
        user_found = True  # a passwd/group file exists but was not readable: do not guess
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
        runs_as_root=uid == 0,
        uid=uid,
        gid=gid,
        user_found=user_found,
        entrypoint=redactor.scrub(_strings(cfg.get("Entrypoint"))),
        cmd=redactor.scrub(_strings(cfg.get("Cmd"))),
        workdir=redactor.text(str(cfg.get("WorkingDir") or "")),
        exposed_ports=exposed_ports(cfg.get("ExposedPorts")),
        env=env,
        labels=redactor.scrub(labels),
        base_image=redactor.text(base) if base else None,
        layers=[
            LayerFact(lf.digest, lf.size, redactor.history(index, lf.created_by), lf.empty)
            for index, lf in enumerate(layer_facts(resolved, scans))
        ],
        size=SizeInfo(compressed, sum(scan.uncompressed for scan in scans)),
        wasted_bytes=wasted,
        secret_env=secret_names,
        runtimes=runtimes,
        userspace=find_userspace(tree, os_info, packages, shell_path, runtimes),
        secrets=[
            {"where": where, "name": redactor.text(name), "rule": rule}
            for where, name, rule in dict.fromkeys(redactor.findings)
        ],
        shell_path=shell_path,
        waste=[Waste(safe_text(redactor.text(w.path)), w.size, w.layers) for w in waste],
    )


__all__ = [
    "Found",
    "Tree",
    "detect",
    "exposed_ports",
    "find_os",
    "find_packages",
    "find_runtimes",
    "find_shell",
    "find_userspace",
    "image_facts",
    "instruction",
    "layer_facts",
    "resolve_user",
    "runs_as_root",
    "stack",
    "wasted_space",
]
