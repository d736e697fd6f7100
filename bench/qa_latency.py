"""Answer-engine speed: index build time, per-question latency, memory.

    .venv/bin/python bench/qa_latency.py [--rounds N]

Targets (issue 2): build < 1 s, p50 < 5 ms, p99 < 20 ms.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import EVAL, load_set
from bot.knowledge import KnowledgeBase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
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


if __name__ == "__main__":
    main()
