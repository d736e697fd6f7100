"""How fast is `dockwise explain` on a big real image, and what does it cost?

Builds (once, cached in the test engine) a ~700 MB Debian toolchain image on the
debootstrap base plus a small second image on the same base, pushes both to a throwaway
local registry, then measures, each in a fresh subprocess (so peak RSS is per run):

- config-only facts (manifest + config, no layers)
- deep facts, cold cache
- deep facts of the second image with the cache of the first (the shared base layer must
  not be downloaded again)
- the naive pipeline: ``skopeo copy`` to a directory + extract every layer +
  ``dpkg-query --admindir``

and prints times, bytes downloaded (counted by a proxy in front of the registry), peak RSS
and the naive/deep ratio. Run: ``.venv/bin/python bench/explain_bench.py`` (starts the
services with ``.ci/services start`` if ``DOCKER_HOST`` is not set; stops them again).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.services import (  # noqa: E402
    RECIPES,
    CountingProxy,
    apt_mirror,
    cache_lock,
    connect_engine,
    docker_build,
    ensure_debian_base,
    recipe_hash,
    skopeo_push,
)

TOOLCHAIN = "dockwise-bench/toolchain:1"
SIBLING = "dockwise-bench/sibling:1"


# --------------------------------------------------------------------------- services


@contextmanager
def services() -> Iterator[None]:
    """Use the running services (DOCKER_HOST set, or `.ci/services start` already run), or
    start them for the bench's duration and stop them again."""
    if os.environ.get("DOCKER_HOST"):
        yield
        return
    script = str(ROOT / ".ci/services")
    status = subprocess.run([script, "status"], capture_output=True, text=True, check=False)
    running = "dockerd: running" in status.stdout
    if not running:
        subprocess.run([script, "start"], check=True)
    try:
        for line in (ROOT / ".cache/services.env").read_text().splitlines():
            key, _, value = line.partition("=")
            os.environ[key] = value
        yield
    finally:
        if not running:
            subprocess.run([script, "stop"], check=False)


# --------------------------------------------------------------------------- images


def build_images() -> tuple[float, bool]:
    client = connect_engine()
    started = time.monotonic()
    with cache_lock():
        debian = ensure_debian_base(client)
        mirror = apt_mirror()
        toolchain = docker_build(
            client,
            TOOLCHAIN,
            RECIPES / "toolchain",
            recipe_hash(RECIPES / "toolchain", debian.image_id, mirror),
            build_args={"MIRROR": mirror},
        )
        sibling = docker_build(
            client,
            SIBLING,
            RECIPES / "toolchain",
            recipe_hash(RECIPES / "toolchain", debian.image_id, "sibling"),
            dockerfile="Dockerfile.app",
        )
    return time.monotonic() - started, toolchain.built or sibling.built or debian.built


# --------------------------------------------------------------------------- measuring

_FACTS = """
import asyncio, json, resource, sys, time
from bot.config import Settings
from bot.image.explain import Explainer, default_platform
from bot.image.reference import parse_reference

async def main():
    ref, deep = sys.argv[1], sys.argv[2] == "deep"
    explainer = Explainer(Settings())
    started = time.perf_counter()
    try:
        if deep:
            facts = (await explainer.facts(ref, source="registry")).to_json()
        else:  # manifest + config only: what a registry source resolves before any layer
            name = str(parse_reference(ref))
            image = await explainer.source("registry").resolve(name, default_platform())
            facts = {"layers": len(image.layers), "config": image.config["config"]}
    finally:
        await explainer.aclose()
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "rss_kib": rss, "facts": facts}))

asyncio.run(main())
"""


@dataclass
class Run:
    seconds: float
    rss_mib: float
    downloaded: int
    facts: dict[str, Any]


def explain(ref: str, *, deep: bool, cache: Path, proxy: CountingProxy) -> Run:
    proxy.reset()
    env = {
        **os.environ,
        "DOCKWISE_CACHE_DIR": str(cache),
        "DOCKWISE_INSECURE_REGISTRIES": proxy.host,
        "DOCKWISE_EXPLAIN_TIMEOUT": "900",
    }
    out = subprocess.run(
        [sys.executable, "-c", _FACTS, ref, "deep" if deep else "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
        timeout=900,
    )
    if out.returncode != 0:
        raise SystemExit(f"explain {ref} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.splitlines()[-1])
    return Run(
        result["seconds"],
        result["rss_kib"] / 1024,
        sum(proxy.bytes_by_kind.values()),
        result["facts"],
    )


def naive(ref: str, work: Path) -> tuple[float, int]:
    """skopeo copy to a dir, extract every layer in order, dpkg-query the result."""
    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    copy = work / "copy"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"dir:{copy}"],
        check=True,
    )
    manifest = json.loads((copy / "manifest.json").read_text())
    rootfs = work / "rootfs"
    rootfs.mkdir()
    for layer in manifest["layers"]:
        blob = copy / layer["digest"].split(":", 1)[1]
        with tarfile.open(blob, "r:*") as tar:
            for member in tar:
                name = os.path.basename(member.name)
                if name.startswith(".wh."):
                    target = rootfs / os.path.dirname(member.name) / name[4:]
                    if target.is_dir() and not target.is_symlink():
                        shutil.rmtree(target)
                    elif target.exists() or target.is_symlink():
                        target.unlink()
                    continue
                if member.isdev():
                    continue
                tar.extract(member, rootfs, filter="fully_trusted", set_attrs=False)
    out = subprocess.run(
        ["dpkg-query", f"--admindir={rootfs / 'var/lib/dpkg'}", "-W", "-f=${Package}\n"],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - started, len(out.stdout.splitlines())


def image_bytes(ref: str) -> int:
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(layer["size"]) for layer in json.loads(raw)["layers"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-naive", action="store_true", help="skip the naive pipeline")
    args = parser.parse_args()
    from tests.fixtures.registry import start_registry

    with services(), tempfile.TemporaryDirectory(prefix="explain-bench-") as tmp:
        work = Path(tmp)
        build_seconds, built = build_images()
        print(f"images: {'built' if built else 'cached'} in {build_seconds:.1f}s")
        registry = start_registry(work / "registry")
        proxy = CountingProxy(registry.url)
        try:
            started = time.monotonic()
            skopeo_push(TOOLCHAIN, f"{registry.host}/bench/toolchain:1")
            skopeo_push(SIBLING, f"{registry.host}/bench/sibling:1")
            print(f"pushed in {time.monotonic() - started:.1f}s")
            big = f"{proxy.host}/bench/toolchain:1"
            sibling = f"{proxy.host}/bench/sibling:1"
            compressed = image_bytes(f"{registry.host}/bench/toolchain:1")
            print(f"toolchain image: {compressed / 1e6:.0f} MB compressed")

            config = explain(big, deep=False, cache=work / "cache-config", proxy=proxy)
            cold = explain(big, deep=True, cache=work / "cache", proxy=proxy)
            warm = explain(sibling, deep=True, cache=work / "cache", proxy=proxy)
            rows = [
                ("config-only facts", config),
                ("deep facts, cold cache", cold),
                ("deep facts, 2nd image, shared base cached", warm),
            ]
            print(f"{'run':45} {'seconds':>8} {'MB down':>9} {'peak RSS MiB':>13}")
            for label, run_ in rows:
                print(
                    f"{label:45} {run_.seconds:8.2f} {run_.downloaded / 1e6:9.3f} "
                    f"{run_.rss_mib:13.0f}"
                )
            packages = (cold.facts.get("packages") or {}).get("count")
            print(f"deep facts: {packages} packages, {len(cold.facts['layers'])} history entries")
            if not args.skip_naive:
                seconds, truth = naive(f"{registry.host}/bench/toolchain:1", work / "naive")
                print(f"{'naive: skopeo copy + extract + dpkg-query':45} {seconds:8.2f}")
                print(f"naive: {truth} packages; naive / deep-cold: {seconds / cold.seconds:.1f}x")
        finally:
            proxy.stop()
            registry.stop()


if __name__ == "__main__":
    main()
