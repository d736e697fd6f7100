"""Answer-engine speed: start-up, per-question latency, memory, one-shot CLI cost.

    .venv/bin/python bench/qa_latency.py [--rounds N] [--runs N]

Targets: load < 1 s (warm cache), p50 < 5 ms, p99 < 20 ms; a one-shot
``dockwise ask`` costs at most 1.5x ``dockwise --help`` as a whole process (CPU seconds,
user+sys, median of --runs, with a warm router cache; wall time printed too).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import EVAL, load_set
from bot.knowledge import KnowledgeBase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    builds = []
    for _ in range(3):
        t0 = time.perf_counter()
        kb = KnowledgeBase.load()
        builds.append(time.perf_counter() - t0)
    on, off = load_set(EVAL)
    questions = [q for q, _ in on] + off
    latencies = []
    for _ in range(args.rounds):
        for q in questions:
            t0 = time.perf_counter()
            kb.answer(q)
            latencies.append(time.perf_counter() - t0)
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"articles {len(kb.articles)}  index build {min(builds) * 1000:.0f} ms "
        f"(first {builds[0] * 1000:.0f} ms)"
    )
    print(
        f"questions {len(latencies)}  p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
        f"max {latencies[-1] * 1000:.2f} ms"
    )
    print(f"peak RSS {rss_mb:.0f} MB")
    one_shot(args.runs)


def _cost(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """CPU seconds (user+sys of the child) and wall seconds of one whole process."""
    before = os.times()
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return cpu, wall


def one_shot(runs: int) -> None:
    exe = shutil.which("dockwise", path=str(Path(sys.executable).parent)) or "dockwise"
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "DOCKWISE_CACHE_DIR": cache}
        ask = [exe, "ask", "why FROM ubuntu?"]
        subprocess.run(ask, env=env, cwd=cache, check=True, capture_output=True)  # warm
        helps = [_cost([exe, "--help"], env, cache) for _ in range(runs)]
        asks = [_cost(ask, env, cache) for _ in range(runs)]
    h_cpu, a_cpu = (statistics.median(c for c, _ in x) for x in (helps, asks))
    h_wall, a_wall = (statistics.median(w for _, w in x) for x in (helps, asks))
    print(
        f"one-shot: dockwise --help {h_cpu:.2f} s CPU ({h_wall:.2f} s wall), "
        f"dockwise ask {a_cpu:.2f} s CPU ({a_wall:.2f} s wall): "
        f"ratio {a_cpu / h_cpu:.2f}x CPU, {a_wall / h_wall:.2f}x wall (target <= 1.5x)"
    )


if __name__ == "__main__":
    main()
