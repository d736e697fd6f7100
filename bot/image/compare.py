"""Compare two images side by side (``dockwise compare A B``, "compare A and B" in chat).

Both images are inspected concurrently by one ``Explainer``: its single-flight and layer
cache make a layer the two share (same digest) be read once. Package lists come from
``bot.image.packages`` (the database files read again from the one layer that holds each,
cached). The reply's ``data`` is::

    {"a": {facts}, "b": {facts},            # ``explain --json`` facts of each image
     "shared_layers": n, "shared_bytes": n,  # layers in both (by diff_id, else digest);
                                             # bytes: their unpacked tar size
     "packages": {"only_a": [{"name", "version", "size"}], "only_b": [...],
                  "changed": [{"name", "a", "b", "size_a", "size_b"}]}}

Package lists are sorted by size (largest first; unknown sizes last), then name, and hold at
most 5,000 entries each (names and versions clipped to 200 characters).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.image.facts import ImageFacts
from bot.image.packages import Package, PackageList, package_lists
from bot.image.render import DOCS, bounded_data, clip, human, os_name, short_name
from bot.image.source import LayerBlob, Platform, ResolvedImage
from bot.reply import Fact, Reply, ReplyKind, Section

if TYPE_CHECKING:
    from bot.image.explain import Explainer, SourceChoice
    from bot.progress import ProgressCallback

TOP = 10
MAX_LISTED = 5000  # packages per list in the JSON (largest first)
NAME_CHARS = 200  # one package name or version as the image's database spells it
LIBC = ("libc6", "musl", "glibc")
APT_LISTS = "var/lib/apt/lists/"


@dataclass(slots=True)
class Side:
    resolved: ResolvedImage
    facts: ImageFacts
    packages: PackageList | None
    apt_lists: bool  # files under /var/lib/apt/lists in the stacked image


def layer_key(blob: LayerBlob) -> str:
    return blob.diff_id or blob.digest


def shared(a: ResolvedImage, b: ResolvedImage, facts_a: ImageFacts) -> tuple[int, int, list[str]]:
    """(count, unpacked bytes, keys) of the layers both images have."""
    keys_b = {layer_key(blob) for blob in b.layers}
    sizes = {layer.digest: layer.size or 0 for layer in facts_a.layers if layer.digest}
    count, total, keys = 0, 0, []
    for blob in a.layers:
        key = layer_key(blob)
        if key in keys_b and key not in keys:
            keys.append(key)
            count += 1
            total += sizes.get(blob.digest, 0)
    return count, total, keys


def _size_key(item: dict[str, Any]) -> tuple[int, str]:
    size = item.get("size")
    if size is None:
        size = max(item.get("size_a") or 0, item.get("size_b") or 0) or None
    return (-(size if size is not None else -1), str(item["name"]))


def _bounded(package: Package) -> Package:
    return Package(clip(package.name, NAME_CHARS), clip(package.version, NAME_CHARS), package.size)


def package_diff(a: PackageList | None, b: PackageList | None) -> dict[str, list[dict[str, Any]]]:
    pa: dict[str, Package] = a.packages if a is not None else {}
    pb: dict[str, Package] = b.packages if b is not None else {}
    pa = {n: _bounded(p) for n, p in pa.items()}
    pb = {n: _bounded(p) for n, p in pb.items()}
    only_a = [pa[n].to_json() for n in pa.keys() - pb.keys()]
    only_b = [pb[n].to_json() for n in pb.keys() - pa.keys()]
    changed = [
        {
            "name": n,
            "a": pa[n].version,
            "b": pb[n].version,
            "size_a": pa[n].size,
            "size_b": pb[n].size,
        }
        for n in pa.keys() & pb.keys()
        if pa[n].version != pb[n].version
    ]
    # Bounded: a hostile package database must not make the reply (or its JSON) huge.
    return {
        "only_a": sorted(only_a, key=_size_key)[:MAX_LISTED],
        "only_b": sorted(only_b, key=_size_key)[:MAX_LISTED],
        "changed": sorted(changed, key=_size_key)[:MAX_LISTED],
    }


def _apt_lists(scans: list[Any]) -> bool:
    present: set[str] = set()
    for scan in scans:
        for directory in scan.opaque:
            present = {p for p in present if not p.startswith(directory + "/")}
        for gone in scan.whiteouts:
            present = {p for p in present if p != gone and not p.startswith(gone + "/")}
        for path, entry in scan.entries.items():
            if path.startswith(APT_LISTS) and entry.kind == "f" and entry.size > 0:
                present.add(path)
    return bool(present)


async def _side(
    explainer: Explainer,
    ref: str,
    source: SourceChoice,
    platform: Platform | None,
    progress: ProgressCallback | None = None,
) -> tuple[ResolvedImage, ImageFacts]:
    return await explainer.inspect(ref, source=source, platform=platform, progress=progress)


def _libc(side: Side) -> tuple[str, str] | None:
    if side.packages is None:
        return None
    for name in LIBC:
        for key, found in side.packages.packages.items():
            if key == name or key.startswith(name + ":"):  # libc6:amd64 (Multi-Arch: same)
                return ("musl" if name == "musl" else "glibc", found.version)
    return None


def _kind(facts: ImageFacts) -> str:
    name = os_name(facts)
    if facts.scratch or name is None:
        return "no OS user space (scratch: only its own files)"
    if not facts.shell and facts.packages is not None:
        style = "" if "distroless" in name.lower() else ", distroless style"
        return f"{name}{style} (package files, no shell)"
    return f"{name} user space"


def _pkg_text(side: Side) -> str:
    facts = side.facts
    if facts.packages is None:
        return "none"
    count = facts.packages.count
    return f"{count if count is not None else 'unknown number of'} ({facts.packages.manager})"


def _platforms(facts: ImageFacts, shown: int = 4) -> str:
    """The first ``shown`` platforms, and how many more there are."""
    more = len(facts.platforms) - shown
    text = ", ".join(facts.platforms[:shown]) or "unknown"
    return f"{text} (+{more} more)" if more > 0 else text


def _start(facts: ImageFacts) -> str:
    words = (facts.entrypoint or []) + (facts.cmd or [])
    return clip(" ".join(words), 60) if words else "(none)"


def _keeps(lower: int, upper: int) -> str:
    """ "it keeps its layer and adds 2 more" for an image built on one with ``lower`` layers."""
    kept = "its layer" if lower == 1 else f"all {lower} of its layers"
    added = upper - lower
    return f"it keeps {kept} and adds {added} more" if added else f"it keeps {kept}"


def _built_on(upper: Side, lower: Side) -> bool:
    """Whether ``upper`` starts with all of ``lower``'s layers and adds some."""
    keys_lower = [layer_key(x) for x in lower.resolved.layers]
    keys_upper = [layer_key(x) for x in upper.resolved.layers]
    return (
        bool(keys_lower)
        and len(keys_upper) > len(keys_lower)
        and (keys_upper[: len(keys_lower)] == keys_lower)
    )


def verdict(a: Side, b: Side, shared_layers: int, diff: dict[str, list[Any]]) -> str:
    na, nb = short_name(a.facts.reference), short_name(b.facts.reference)
    fa, fb = a.facts, b.facts
    sentences: list[str] = []
    keys_a = [layer_key(x) for x in a.resolved.layers]
    keys_b = [layer_key(x) for x in b.resolved.layers]
    if keys_a and keys_a == keys_b:
        sentences.append(f"{na} and {nb} have the same layers: the same filesystem.")
    elif keys_a and keys_b[: len(keys_a)] == keys_a:
        sentences.append(f"{nb} is built on {na}: {_keeps(len(keys_a), len(keys_b))}.")
    elif keys_b and keys_a[: len(keys_b)] == keys_b:
        sentences.append(f"{na} is built on {nb}: {_keeps(len(keys_b), len(keys_a))}.")
    elif shared_layers:
        sentences.append(f"They share {shared_layers} layer(s) (downloaded and stored once).")
    else:
        sentences.append("They share no layers.")
    os_a, os_b = fa.os.id if fa.os else None, fb.os.id if fb.os else None
    libc_a, libc_b = _libc(a), _libc(b)
    if os_a and os_a == os_b:
        same = (fa.os.version_id if fa.os else None) == (fb.os.version_id if fb.os else None)
        text = f"Both carry {os_name(fa) if same else os_a}'s user space"
        if libc_a and libc_b and libc_a == libc_b:
            text += f" with the same {libc_a[0]} ({libc_a[1]})"
        elif libc_a and libc_b:
            text += f", with {libc_a[0]} {libc_a[1]} vs {libc_b[0]} {libc_b[1]}"
        sentences.append(text + ".")
    elif os_a or os_b:
        sentences.append(
            f"{na} carries {os_name(fa) or 'no OS user space'}"
            + (f" ({libc_a[0]})" if libc_a else "")
            + f"; {nb} carries {os_name(fb) or 'no OS user space'}"
            + (f" ({libc_b[0]})" if libc_b else "")
            + "."
            + (
                " Binaries built against one C library may not run on the other."
                if libc_a and libc_b and libc_a[0] != libc_b[0]
                else ""
            )
        )
    ca = fa.packages.count if fa.packages and fa.packages.count is not None else None
    cb = fb.packages.count if fb.packages and fb.packages.count is not None else None
    if ca is not None and cb is not None and ca != cb:
        smaller, larger = (nb, na) if cb < ca else (na, nb)
        details = []
        if diff["only_a"] or diff["only_b"]:
            details.append(
                f"{len(diff['only_a'])} only in {na}, {len(diff['only_b'])} only in {nb}"
            )
        sentences.append(
            f"{smaller} has {abs(ca - cb)} fewer packages than {larger}"
            + (f" ({'; '.join(details)})" if details else "")
            + "."
        )
    both_dpkg = all(
        side.facts.packages is not None and side.facts.packages.manager == "dpkg" for side in (a, b)
    )
    if both_dpkg and a.apt_lists != b.apt_lists:
        without = nb if a.apt_lists else na
        sentences.append(f"{without} has no apt lists (/var/lib/apt/lists was cleaned).")
    ua, ub = fa.size.uncompressed, fb.size.uncompressed
    on_top = [(nb, na, cb, ca, ub, ua), (na, nb, ca, cb, ua, ub)]
    for upper, lower, c_up, c_low, u_up, u_low in on_top:
        lower_keys = keys_a if lower == na else keys_b
        upper_keys = keys_b if upper == nb else keys_a
        if (
            lower_keys
            and upper_keys[: len(lower_keys)] == lower_keys
            and len(upper_keys) > len(lower_keys)
            and c_up is not None
            and c_low is not None
            and c_up < c_low
            and u_up
            and u_low
            and u_up >= u_low
        ):
            sentences.append(
                f"Removing packages in a layer on top does not make {upper} smaller: the "
                f"files still ship in {lower}'s layers."
            )
    if ua and ub and ua != ub:
        smaller, larger = (nb, na) if ub < ua else (na, nb)
        delta = abs(ua - ub)
        percent = delta * 100 // max(ua, ub)
        sentences.append(
            f"{smaller} is {human(delta)} smaller unpacked"
            + (f" ({percent}% less)." if percent >= 1 else ".")
        )
    if (
        shared_layers == 0
        and os_a
        and os_a == os_b
        and libc_a == libc_b
        and ca is not None
        and cb is not None
        and abs(ca - cb) > 0
    ):
        slim, full = (nb, na) if cb < ca else (na, nb)
        sentences.append(f"In short: {slim} is {full}'s slim variant.")
    return " ".join(sentences)


def advice(a: Side, b: Side) -> list[str]:
    out: list[str] = []
    for side, other in ((a, b), (b, a)):
        f, name = side.facts, short_name(side.facts.reference)
        if f.secret_env:
            out.append(
                f"{name} has {len(f.secret_env)} ENV value(s) that look like secrets "
                f"({', '.join(clip(n, 40) for n in f.secret_env[:3])}): anyone who can pull it "
                "can read them. Rotate them and pass them at run time."
            )
        if f.runs_as_root and not other.facts.runs_as_root:
            out.append(f"{name} runs as root; the other does not. Prefer a non-root USER.")
        if not f.shell and other.facts.shell:
            out.append(
                f"{name} has no shell: `docker exec ... sh` will not work there; use "
                "`docker debug` or a :debug variant."
            )
        if f.wasted_bytes >= 1024 * 1024:
            out.append(
                f"{name} wastes {human(f.wasted_bytes)} (files written in one layer, deleted in "
                "a later one): clean up in the same RUN."
            )
    la, lb = _libc(a), _libc(b)
    if la and lb and la[0] != lb[0]:
        out.append(
            "One uses glibc and the other musl: test your binaries and Python wheels on the "
            "one you pick."
        )
    ca = a.facts.packages.count if a.facts.packages else None
    cb = b.facts.packages.count if b.facts.packages else None
    if ca and cb and ca != cb:
        fewer, more = (a, b) if ca < cb else (b, a)
        small = short_name(fewer.facts.reference)
        size_fewer, size_more = fewer.facts.size.uncompressed, more.facts.size.uncompressed
        if (
            _built_on(fewer, more)
            and size_fewer is not None
            and size_more is not None
            and size_fewer >= size_more
        ):
            out.append(
                f"{small} has fewer packages but is no smaller: they were removed in a layer "
                f"on top of {short_name(more.facts.reference)}'s, which still ship. Start it "
                "from a base without them (or copy what you need into a fresh stage)."
            )
        else:
            out.append(
                f"If your app runs on {small}, prefer it: fewer packages mean fewer files to "
                "patch and fewer CVEs to track."
            )
    return out


def _top(items: list[dict[str, Any]], changed: bool = False) -> str:
    if not items:
        return "none"
    shown = []
    for item in items[:TOP]:
        if changed:
            shown.append(
                f"`{clip(item['name'], 40)}` {clip(item['a'], 30)} → {clip(item['b'], 30)}"
            )
        else:
            size = f" ({human(item['size'])})" if item.get("size") is not None else ""
            shown.append(f"`{clip(item['name'], 40)}`{size}")
    more = f", and {len(items) - TOP} more" if len(items) > TOP else ""
    return ", ".join(shown) + more


def render_comparison(a: Side, b: Side) -> Reply:
    count, total, _keys = shared(a.resolved, b.resolved, a.facts)
    diff = package_diff(a.packages, b.packages)
    na, nb = short_name(a.facts.reference), short_name(b.facts.reference)
    fa, fb = a.facts, b.facts

    def both(label: str, va: str, vb: str) -> Fact:
        return Fact(label, f"{clip(va, 70)}  |  {clip(vb, 70)}")

    facts = [
        both("Images", na, nb),
        both("User space", _kind(fa), _kind(fb)),
        both("Packages", _pkg_text(a), _pkg_text(b)),
        both(
            "Size",
            f"{human(fa.size.uncompressed)} unpacked, {human(fa.size.compressed)} compressed",
            f"{human(fb.size.uncompressed)} unpacked, {human(fb.size.compressed)} compressed",
        ),
        both(
            "Layers",
            str(sum(1 for x in fa.layers if not x.empty)),
            str(sum(1 for x in fb.layers if not x.empty)),
        ),
        Fact(
            "Shared layers",
            f"{count} ({human(total)} unpacked, stored once)" if count else "none",
        ),
        both("Shell", fa.shell_path or "none", fb.shell_path or "none"),
        both(
            "User",
            "root" if fa.runs_as_root else fa.user,
            "root" if fb.runs_as_root else fb.user,
        ),
        both("Ports", ", ".join(fa.exposed_ports) or "none", ", ".join(fb.exposed_ports) or "none"),
        both("Runs", _start(fa), _start(fb)),
        both("Platforms", _platforms(fa), _platforms(fb)),
        both("Wasted", human(fa.wasted_bytes), human(fb.wasted_bytes)),
        both(
            "Secrets flagged",
            str(len(fa.secret_env)) if fa.secret_env else "none",
            str(len(fb.secret_env)) if fb.secret_env else "none",
        ),
    ]
    package_lines = [
        f"- Only in {na}: {len(diff['only_a'])}: {_top(diff['only_a'])}",
        f"- Only in {nb}: {len(diff['only_b'])}: {_top(diff['only_b'])}",
        f"- Different versions: {len(diff['changed'])}: {_top(diff['changed'], changed=True)}",
    ]
    for side in (a, b):
        if side.facts.packages is not None and side.packages is None:
            package_lines.append(
                f"- {short_name(side.facts.reference)}: its {side.facts.packages.manager} "
                "database is not listed by name (counts only)."
            )
    sections = [Section("Packages", "\n".join(package_lines))]
    tips = advice(a, b)
    if tips:
        sections.append(Section("Advice", "\n".join(f"- {t}" for t in tips)))
    related = ["base-image-choice", "layers-and-size"]
    if _libc(a) != _libc(b):
        related.append("musl-vs-glibc")
    if fa.secret_env or fb.secret_env:
        related.append("secrets-in-images")
    data = {
        "a": bounded_data(fa),
        "b": bounded_data(fb),
        "shared_layers": count,
        "shared_bytes": total,
        "packages": diff,
    }
    return Reply(
        kind=ReplyKind.IMAGE,
        title=f"{na} vs {nb}",
        body=verdict(a, b, count, diff),
        facts=facts,
        sections=sections,
        sources=[DOCS["base"], DOCS["layers"]],
        related=related,
        data=data,
    )


async def compare_images(
    explainer: Explainer,
    a: str,
    b: str,
    *,
    source: SourceChoice = "auto",
    platform: Platform | None = None,
    progress: ProgressCallback | None = None,
) -> Reply:
    """Inspect ``a`` and ``b`` concurrently and compare them; ``progress`` gets both
    images' ``ExplainProgress`` events (each names its image). Raises the explainer's
    DockwiseErrors (InvalidReference, ImageNotFound, Unreachable, ...)."""
    from bot.image.render import finish

    (ra, fa), (rb, fb) = await asyncio.gather(
        _side(explainer, a, source, platform, progress),
        _side(explainer, b, source, platform, progress),
    )
    lists = await package_lists(explainer, [ra, rb])
    sides = []
    for resolved, facts, packages in ((ra, fa, lists[0]), (rb, fb, lists[1])):
        scans = [await explainer.scan(blob) for blob in resolved.layers]
        sides.append(Side(resolved, finish(facts), packages, _apt_lists(scans)))
    return render_comparison(sides[0], sides[1])


__all__ = ["compare_images", "package_diff", "render_comparison", "shared", "verdict"]
