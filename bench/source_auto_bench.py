"""How fast is `dockwise explain --source auto` when the Docker Engine has the image?

Builds (once, cached in the test engine) a ~0.5 GB image on the debootstrap Debian base
(the base plus layers of incompressible and of compressible files), ``docker push``es it to
a throwaway local registry (so the engine records its RepoDigest there), then measures,
each run in a fresh subprocess with an empty cache:

- ``docker save IMAGE`` alone, to /dev/null (the floor for anything reading the engine)
- ``explain --source docker``: the engine's export, streamed (target: within 1.3x of save)
- ``explain --source auto``: the engine names the same image in the registry, so it is
  read from there (target: at most 0.4x the naive pipeline)
- the naive pipeline: ``skopeo copy`` + extract every layer + ``dpkg-query``

Run: ``.venv/bin/python bench/source_auto_bench.py [--repeat N]`` (starts the services
with ``.ci/services start`` if ``DOCKER_HOST`` is not set; stops them again).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.explain_bench import naive, services  # noqa: E402
from tests.fixtures.services import (  # noqa: E402
    CACHE,
    cache_lock,
    connect_engine,
    docker_build,
    ensure_debian_base,
    recipe_hash,
)

IMAGE = "dockwise-bench/auto:1"
DOCKERFILE = """\
FROM {base}
COPY random/ /opt/data/random/
COPY text/ /usr/share/doc/bench/
COPY tail.bin /opt/data/tail.bin
WORKDIR /opt/data
"""

_FACTS = """
import asyncio, json, sys, time
from bot.config import Settings
from bot.image.explain import Explainer

async def main():
    explainer = Explainer(Settings())
    started = time.perf_counter()
    try:
        facts = (await explainer.facts(sys.argv[1], source=sys.argv[2])).to_json()
    finally:
        await explainer.aclose()
    print(json.dumps({"seconds": time.perf_counter() - started, "source": facts["source"],
                      "packages": (facts.get("packages") or {}).get("count")}))

asyncio.run(main())
"""


def make_context(directory: Path) -> Path:
    """Deterministic content: 160 MB incompressible in 8 files, ~160 MB of text in 4,000
    files (compresses like documentation), one 40 MB incompressible file."""
    if (directory / "Dockerfile").exists():
        return directory
    rng = random.Random(11)
    (directory / "random").mkdir(parents=True)
    for i in range(8):
        (directory / "random" / f"blob{i}.bin").write_bytes(rng.randbytes(20 << 20))
    (directory / "text").mkdir()
    words = [f"word{n}" for n in range(5000)]
    for i in range(4000):
        line = " ".join(rng.choices(words, k=12))
        (directory / "text" / f"doc{i:04}.txt").write_text((line + "\n") * 520)
    (directory / "tail.bin").write_bytes(rng.randbytes(40 << 20))
    return directory


def build() -> str:
    client = connect_engine()
    with cache_lock():
        base = ensure_debian_base(client)
        context = CACHE / "bench-auto"
        partial = context.with_suffix(".tmp")
        if not (context / "Dockerfile").exists():
            make_context(partial)
            (partial / "Dockerfile").write_text(DOCKERFILE.format(base=base.name))
            partial.rename(context)
        image = docker_build(client, IMAGE, context, recipe_hash(context, base.image_id))
    return image.name


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, env=env, cwd=ROOT, timeout=900
    )
    return time.perf_counter() - started, out.stdout


def save_alone(image: str) -> float:
    started = time.perf_counter()
    subprocess.run(["docker", "save", image], stdout=subprocess.DEVNULL, check=True, timeout=900)
    return time.perf_counter() - started


def explain(image: str, source: str, work: Path, insecure: str) -> tuple[float, dict[str, object]]:
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
    env = {
        **os.environ,
        "DOCKWISE_CACHE_DIR": str(cache),
        "DOCKWISE_INSECURE_REGISTRIES": insecure,
        "DOCKWISE_EXPLAIN_TIMEOUT": "900",
    }
    _, out = timed([sys.executable, "-c", _FACTS, image, source], env)
    result = json.loads(out.splitlines()[-1])
    return float(result["seconds"]), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    args = parser.parse_args()
    from tests.fixtures.registry import start_registry

    with services(), tempfile.TemporaryDirectory(prefix="auto-bench-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        image = build()
        print(f"image {image}: ready in {time.monotonic() - started:.1f}s")
        registry = start_registry(work / "registry")
        try:
            pushed = f"{registry.host}/bench/auto:1"
            subprocess.run(["docker", "tag", image, pushed], check=True)
            subprocess.run(["docker", "push", "-q", pushed], check=True, capture_output=True)
            size = json.loads(
                subprocess.run(
                    ["docker", "image", "inspect", "-f", "{{json .Size}}", image],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            print(f"uncompressed size {int(size) / 1e6:.0f} MB; pushed to {pushed}")
            rows: dict[str, list[float]] = {}
            notes: dict[str, str] = {}
            for _ in range(args.repeat):
                rows.setdefault("docker save alone", []).append(save_alone(image))
                seconds, res = explain(image, "docker", work, registry.host)
                rows.setdefault("explain --source docker", []).append(seconds)
                notes["explain --source docker"] = f"read from {res['source']}"
                seconds, res = explain(image, "auto", work, registry.host)
                rows.setdefault("explain --source auto", []).append(seconds)
                notes["explain --source auto"] = f"read from {res['source']}"
                seconds, res = explain(image, "auto", work, "")
                rows.setdefault("explain --source auto, registry not trusted", []).append(seconds)
                notes["explain --source auto, registry not trusted"] = f"read from {res['source']}"
                naive_seconds, packages = naive(pushed, Path(tempfile.mkdtemp(dir=work)))
                rows.setdefault("naive: skopeo copy + extract + dpkg-query", []).append(
                    naive_seconds
                )
                notes["naive: skopeo copy + extract + dpkg-query"] = f"{packages} packages"
            median = {label: statistics.median(values) for label, values in rows.items()}
            print(f"{'run (median of ' + str(args.repeat) + ')':48} {'seconds':>8}")
            for label, value in median.items():
                print(f"{label:48} {value:8.2f}  {notes.get(label, '')}")
            save = median["docker save alone"]
            naive_s = median["naive: skopeo copy + extract + dpkg-query"]
            print(
                f"engine explain / docker save alone: "
                f"{median['explain --source docker'] / save:.2f}x (target <= 1.3x)"
            )
            print(
                f"auto / naive pipeline: {median['explain --source auto'] / naive_s:.2f}x "
                "(target <= 0.4x)"
            )
            print(
                "auto (registry not trusted, so the engine) / naive: "
                f"{median['explain --source auto, registry not trusted'] / naive_s:.2f}x"
            )
        finally:
            registry.stop()


if __name__ == "__main__":
    main()
