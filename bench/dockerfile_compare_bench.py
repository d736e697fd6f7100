"""How fast are `dockwise dockerfile` and `dockwise compare`?

- Dockerfile: every test Dockerfile (tests/data/dockerfiles) explained in-process without
  base inspection (BuildKit parse + hadolint subprocess + DW rules + text): median, p95, max.
- Compare: the two comparison test images (tests/images/compare, built in the test engine
  by tests/test_compare.py) with ``--source docker``, each run in a fresh subprocess: cold
  (empty cache dir) and warm (the same cache dir again).

Run with the services up (``.ci/services start`` and ``set -a; . .cache/services.env``):
``.venv/bin/python bench/dockerfile_compare_bench.py``. Without DOCKER_HOST only the
Dockerfile figures are printed.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.dockerfile_explain import explain_dockerfile  # noqa: E402

PAIR = ("dockwise-test/cmp-a:1", "dockwise-test/cmp-b:1")


def dockerfile_figures() -> None:
    files = sorted((ROOT / "tests/data/dockerfiles").glob("*.Dockerfile"))
    times = []
    for path in files:
        text = path.read_text()
        started = time.perf_counter()
        asyncio.run(explain_dockerfile(text))
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    print(
        f"dockerfile: {len(files)} files, median {statistics.median(times):.0f} ms, "
        f"p95 {p95:.0f} ms, max {times[-1]:.0f} ms (no base inspection)"
    )


def compare_once(cache: Path) -> float:
    env = {**os.environ, "DOCKWISE_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "compare", "--json", "--source", "docker", *PAIR],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"compare failed: {proc.stderr.strip()}")
    return elapsed


def compare_figures() -> None:
    if not os.environ.get("DOCKER_HOST"):
        print("compare: skipped (no DOCKER_HOST; start .ci/services)")
        return
    with tempfile.TemporaryDirectory(prefix="dw-bench-") as tmp:
        cold = compare_once(Path(tmp))
        warm = compare_once(Path(tmp))
    print(f"compare {PAIR[0]} {PAIR[1]} --source docker: cold {cold:.1f} s, warm {warm:.1f} s")


if __name__ == "__main__":
    dockerfile_figures()
    compare_figures()
