"""Choose the router's thresholds on the EVALUATION split only (never the held-out one).

    .venv/bin/python bench/qa_tune.py

Grid-searches ``Router.OFFTOPIC_MIN`` and ``Router.ANSWER_MIN`` and prints the best few
settings by the worst ratio to the issue's eval targets (top-1 95 %, fallback 97 %,
uncovered 90 %). The chosen values are copied into bot/retrieval.py by hand.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import EVAL, load_qa
from bot.knowledge import KnowledgeBase
from bot.retrieval import OFFTOPIC_CLASS

TARGETS = (0.95, 0.97, 0.90)


def main() -> None:
    router = KnowledgeBase.load().router
    qa = load_qa(EVAL)
    texts = [q for q, _ in qa.on_topic] + qa.off_topic + qa.uncovered
    probs = np.array([router.probabilities(t)[0] for t in texts])
    cols = [router.classes.index(a) for a in router.article_ids]
    articles = probs[:, cols]
    best, arg = articles.max(axis=1), articles.argmax(axis=1)
    p_off = probs[:, router.classes.index(OFFTOPIC_CLASS)]
    n_on, n_off = len(qa.on_topic), len(qa.off_topic)
    expected = np.array([router.article_ids.index(e) for _, e in qa.on_topic])
    results = []
    for off_min, answer_min in itertools.product(
        np.arange(0.10, 0.80, 0.025), np.arange(0.05, 0.70, 0.025)
    ):
        fallback = p_off >= off_min
        answer = ~fallback & (best >= answer_min)
        uncovered = ~fallback & ~answer
        top1 = float(np.mean(answer[:n_on] & (arg[:n_on] == expected)))
        refused = float(np.mean(fallback[n_on : n_on + n_off]))
        said = float(np.mean(uncovered[n_on + n_off :]))
        worst = min(r / t for r, t in zip((top1, refused, said), TARGETS, strict=True))
        results.append((worst, top1, refused, said, off_min, answer_min))
    results.sort(reverse=True)
    for worst, top1, refused, said, off_min, answer_min in results[:8]:
        print(
            f"worst/target {worst:.3f}  top-1 {top1:.1%}  fallback {refused:.1%}  "
            f"uncovered {said:.1%}   OFFTOPIC_MIN={off_min:.3f} ANSWER_MIN={answer_min:.3f}"
        )


if __name__ == "__main__":
    main()
