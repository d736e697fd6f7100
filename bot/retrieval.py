"""Route a question: the article that answers it, "uncovered", or "not my topic".

One calibrated classifier decides all three. Its classes are the article ids plus two
more: ``~uncovered`` (about containers, but no article covers it) and ``~offtopic`` (not
about containers: everyday and other-technical senses of our words, such as Jupyter
kernels, git commits or food containers). It is a multinomial logistic regression
(scikit-learn) over three views of a question:

- word 1-2-grams and character 3-5-grams (TF-IDF, sublinear tf, l2 per view), which
  catch error messages, commands and typos exactly;
- a 256-dimension sentence embedding from the static model that ships with dockwise
  (``bot/models/minilm-static``: model2vec distilled from all-MiniLM-L6-v2, int8; see
  MODEL.md there), which catches meaning when the words differ.

It is fitted on texts we ship, never on the evaluation sets: each article's title, main
question, example questions and lead; ``bot/data/routing_docker_topics.yaml`` (container
questions, the ones past ``COVERED_PREFIX`` as ``~uncovered``) and
``bot/data/routing_negatives.yaml`` (``~offtopic``). Outcomes (thresholds chosen on
tests/data/qa_eval.yaml by bench/qa_tune.py; tests/data/qa_holdout.yaml is held out):
``fallback`` when P(~offtopic) >= ``OFFTOPIC_MIN``; ``answer`` when the best article's
probability >= ``ANSWER_MIN``; otherwise ``uncovered``, with the nearest articles as
"maybe related".

Fitting needs scikit-learn (a second or more to import); answering needs only numpy and
model2vec: the fitted vocabularies, IDF weights and coefficients are cached on disk
(``$DOCKWISE_CACHE_DIR/router-<key>.npz``) keyed by the content hash of the model, the
articles and the training texts, and :class:`TextFeatures` reproduces scikit-learn's
``TfidfVectorizer.transform`` for them (tests/test_retrieval.py checks it is identical).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from bot.knowledge import Article

Vector = npt.NDArray[np.float32]
ROUTER_VERSION = "3"
UNCOVERED_CLASS = "~uncovered"
OFFTOPIC_CLASS = "~offtopic"
# The first entries of routing_docker_topics.yaml phrase topics the articles cover: they
# count as container questions, not as ~uncovered examples.
COVERED_PREFIX = 41


class Outcome(StrEnum):
    ANSWER = "answer"
    UNCOVERED = "uncovered"
    FALLBACK = "fallback"


@dataclass(frozen=True, slots=True)
class Hit:
    article_id: str
    score: float  # the classifier's probability for this article, 0..1


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    hits: list[Hit]  # the nearest articles, best first (for "uncovered": maybe related)
    domain: float  # 1 - P(~offtopic): how sure we are it is about containers, 0..1

    @property
    def on_topic(self) -> bool:
        return self.outcome is Outcome.ANSWER


def model_dir() -> Path:
    """The packaged static embedding model (a model2vec ``save_pretrained`` folder)."""
    return Path(str(resources.files("bot").joinpath("models", "minilm-static")))


def data_file(name: str) -> Path:
    return Path(str(resources.files("bot").joinpath("data", name)))


def cache_dir() -> Path:
    env = os.environ.get("DOCKWISE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dockwise"


class Embedder(Protocol):
    def encode(self, texts: Sequence[str]) -> Vector: ...


class StaticEmbedder:
    """Sentence embeddings from the packaged model2vec model: the mean of the question's
    token vectors (WordPiece via ``tokenizers``, no special tokens, unknown tokens dropped,
    at most 512 tokens), as model2vec's ``StaticModel.encode`` computes it; rows are
    unit-length float32 (a question with no known token gives a zero row).

    The folder (model2vec's ``save_pretrained`` layout) is read with safetensors and
    tokenizers directly: importing model2vec and building a ``StaticModel`` costs more
    start-up than a one-shot ``dockwise ask`` can spend (tests/test_retrieval.py checks
    the vectors equal model2vec's). Raises ValueError when the files are missing or bad.
    """

    MAX_TOKENS = 512

    def __init__(self, path: Path | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = path or model_dir()
        try:
            tensors = load_file(str(folder / "model.safetensors"))
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # safetensors and tokenizers raise their own types
            raise ValueError(f"the embedding model in {folder} can't be loaded: {exc}") from exc
        if "mapping" in tensors or "weights" in tensors:
            raise ValueError(f"{folder}: vocabulary-quantised models are not supported")
        self._vectors = tensors["embeddings"].astype(np.float32)
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.MAX_TOKENS)
        unk = getattr(tokenizer.model, "unk_token", None)
        self._unk = tokenizer.token_to_id(unk) if unk else None
        self._tokenizer = tokenizer

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    def encode(self, texts: Sequence[str]) -> Vector:
        clean = [t.encode("utf-8", "replace").decode("utf-8") for t in texts]  # no surrogates
        encodings = self._tokenizer.encode_batch(clean, add_special_tokens=False)
        out = np.zeros((len(encodings), self.dim), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            ids = [i for i in encoding.ids if i != self._unk]
            if ids:
                out[row] = self._vectors[ids].mean(axis=0)
        return _unit(out)


@cache
def default_embedder() -> StaticEmbedder:
    return StaticEmbedder()


def _unit(m: npt.NDArray[Any]) -> Vector:
    norms = np.linalg.norm(m, axis=-1, keepdims=True)
    out: Vector = (m / np.maximum(norms, 1e-9)).astype(np.float32)
    return out


TRAINING_FILES = ("routing_docker_topics.yaml", "routing_negatives.yaml")


def load_texts(name: str) -> list[str]:
    """A packaged YAML list of strings (``bot/data/NAME``), read with libyaml."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(data_file(name).read_text(encoding="utf-8"), Loader=loader) or []  # noqa: S506
    return [str(t) for t in data if str(t).strip()]


# ----- text features: scikit-learn's TfidfVectorizer.transform, for fitted vocabularies ----
_WORD = re.compile(r"(?u)\b\w\w+\b")  # TfidfVectorizer's default token_pattern
_SPACES = re.compile(r"\s\s+")


def word_ngrams(text: str) -> list[str]:
    """Lower-cased word 1- and 2-grams, as ``TfidfVectorizer(ngram_range=(1, 2))``."""
    tokens = _WORD.findall(text.lower())
    return tokens + [" ".join(tokens[i : i + 2]) for i in range(len(tokens) - 1)]


def char_wb_ngrams(text: str, low: int = 3, high: int = 5) -> list[str]:
    """Character n-grams inside word boundaries, as ``analyzer="char_wb"``."""
    out: list[str] = []
    for word in _SPACES.sub(" ", text.lower()).split():
        padded = f" {word} "
        size = len(padded)
        for n in range(low, high + 1):
            offset = 0
            out.append(padded[offset : offset + n])
            while offset + n < size:
                offset += 1
                out.append(padded[offset : offset + n])
            if offset == 0:  # a word shorter than n counts once
                break
    return out


class TextFeatures:
    """Sparse TF-IDF features of one text over two fitted vocabularies (words, chars):
    column indices and values, each view l2-normalised, chars offset after words."""

    def __init__(
        self,
        word_terms: Sequence[str],
        word_idf: npt.NDArray[np.float64],
        char_terms: Sequence[str],
        char_idf: npt.NDArray[np.float64],
    ) -> None:
        self.word_vocab = {t: i for i, t in enumerate(word_terms)}
        self.char_vocab = {t: i for i, t in enumerate(char_terms)}
        self.word_idf = word_idf
        self.char_idf = char_idf
        self.width = len(word_terms) + len(char_terms)

    def transform(self, text: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        cols: list[int] = []
        vals: list[float] = []
        for grams, vocab, idf, offset in (
            (word_ngrams(text), self.word_vocab, self.word_idf, 0),
            (char_wb_ngrams(text), self.char_vocab, self.char_idf, len(self.word_vocab)),
        ):
            counts = Counter(i for g in grams if (i := vocab.get(g)) is not None)
            if not counts:
                continue
            index = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            weights = (1.0 + np.log(tf)) * idf[index]
            weights /= math.sqrt(float(weights @ weights))
            cols += (index + offset).tolist()
            vals += weights.tolist()
        return np.array(cols, dtype=np.int64), np.array(vals, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Section:
    article: int  # index into the router's article ids
    section: int  # index among that article's sections


class Router:
    """Routes a question to one of ``article_ids`` (or uncovered / fallback).

    ``decide`` and ``best_section`` are thread-safe (numpy, a locked tokenizer)."""

    OFFTOPIC_MIN = 0.30  # P(~offtopic) at or above which the question is not our topic
    ANSWER_MIN = 0.30  # the best article's probability for a confident answer

    def __init__(
        self,
        classes: list[str],
        features: TextFeatures,
        coef: npt.NDArray[np.float32],
        intercept: npt.NDArray[np.float64],
        sections: list[Section],
        section_vectors: Vector,
        embedder: Embedder,
        *,
        section_terms: SparseRows | None = None,
    ) -> None:
        self.classes = classes
        self.article_ids = [c for c in classes if not c.startswith("~")]
        self._article_cols = np.array([classes.index(a) for a in self.article_ids])
        self._offtopic = classes.index(OFFTOPIC_CLASS)
        self._features = features
        self._coef = coef
        self._intercept = intercept
        self._sections = sections
        self._section_vectors = section_vectors
        self._section_terms = section_terms
        self._embedder = embedder

    # ----- building ---------------------------------------------------------------------
    @classmethod
    def for_articles(
        cls,
        articles: Mapping[str, Article],
        *,
        embedder: Embedder | None = None,
        cache: Path | None = None,
    ) -> Router:
        """Load the fitted router for ``articles`` from the on-disk cache, or fit it (and
        cache it). Raises ValueError if the packaged model or training texts are missing."""
        emb = embedder if embedder is not None else default_embedder()
        ordered = [articles[k] for k in sorted(articles)]
        sections = [Section(i, j) for i, a in enumerate(ordered) for j in range(len(a.sections))]
        section_texts = [
            f"{ordered[s.article].sections[s.section].heading}. "
            f"{ordered[s.article].sections[s.section].text}"
            for s in sections
        ]
        key = _content_key(ordered)
        path = (cache if cache is not None else cache_dir()) / f"router-{key}.npz"
        fitted = _load_cached(path)
        features = None
        if fitted is None:
            fitted = _fit(*training_set(ordered), emb)
            features = _features_of(fitted)
            fitted["section_vectors"] = emb.encode(section_texts)
            fitted.update(_section_terms(features, section_texts))
            _save_cached(path, fitted)
        return cls(
            [str(c) for c in fitted["classes"].tolist()],
            features or _features_of(fitted),
            fitted["coef"],
            fitted["intercept"],
            sections,
            fitted["section_vectors"],
            emb,
            section_terms=(
                fitted["section_indptr"],
                fitted["section_indices"],
                fitted["section_values"],
            ),
        )

    # ----- routing ----------------------------------------------------------------------
    def probabilities(self, question: str) -> tuple[npt.NDArray[np.float64], Vector]:
        """Class probabilities (in ``classes`` order) and the question's embedding."""
        vector = self._embedder.encode([question])[0]
        cols, vals = self._features.transform(question)
        width = self._features.width
        z = self._coef[:, cols] @ vals + self._coef[:, width:] @ vector + self._intercept
        z = z - z.max()
        p = np.exp(z)
        return p / p.sum(), vector

    def decide(self, question: str, k: int = 3) -> Decision:
        p, _ = self.probabilities(question)
        articles = p[self._article_cols]
        order = np.argsort(-articles, kind="stable")[:k]
        hits = [Hit(self.article_ids[i], float(articles[i])) for i in order]
        p_off = float(p[self._offtopic])
        if p_off >= self.OFFTOPIC_MIN:
            outcome = Outcome.FALLBACK
        elif hits[0].score >= self.ANSWER_MIN:
            outcome = Outcome.ANSWER
        else:
            outcome = Outcome.UNCOVERED
        return Decision(outcome, hits, 1.0 - p_off)

    def best_section(self, question: str, article_id: str) -> int | None:
        """Index of the article's section that best matches the question (None if the
        article has no sections): the highest sum of two cosine similarities between the
        question and the section (heading and text), one of their embeddings and one of
        their TF-IDF word and character n-grams (the router's fitted vocabularies), which
        catches the commands, flags and error words a section names. Measured by
        bench/qa_sections.py."""
        i = self.article_ids.index(article_id)
        rows = [n for n, s in enumerate(self._sections) if s.article == i]
        if not rows:
            return None
        vector = self._embedder.encode([question])[0]
        sims = (self._section_vectors[rows] @ vector).astype(np.float64)
        if self._section_terms is not None:
            indptr, indices, values = self._section_terms
            cols, vals = self._features.transform(question)
            dense = np.zeros(self._features.width, dtype=np.float64)
            dense[cols] = vals
            for n, r in enumerate(rows):  # word and char views: each l2-normalised
                lo, hi = indptr[r], indptr[r + 1]
                sims[n] += float(values[lo:hi] @ dense[indices[lo:hi]])
        return self._sections[rows[int(np.argmax(sims))]].section


SparseRows = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]


def _features_of(fitted: Mapping[str, Any]) -> TextFeatures:
    return TextFeatures(
        fitted["word_terms"].tolist(),
        fitted["word_idf"],
        fitted["char_terms"].tolist(),
        fitted["char_idf"],
    )


def _section_terms(features: TextFeatures, texts: Sequence[str]) -> dict[str, Any]:
    """The sections' TF-IDF vectors as CSR arrays (indptr, indices, values)."""
    indptr = [0]
    indices: list[npt.NDArray[np.int64]] = []
    values: list[npt.NDArray[np.float64]] = []
    for text in texts:
        cols, vals = features.transform(text)
        indices.append(cols)
        values.append(vals)
        indptr.append(indptr[-1] + len(cols))
    return {
        "section_indptr": np.array(indptr, dtype=np.int64),
        "section_indices": np.concatenate(indices) if indices else np.zeros(0, np.int64),
        "section_values": np.concatenate(values) if values else np.zeros(0, np.float64),
    }


def training_set(articles: Sequence[Article]) -> tuple[list[str], list[str]]:
    """The texts the classifier is fitted on, with their class labels."""
    texts: list[str] = []
    labels: list[str] = []
    for a in articles:
        items = [a.title, a.question, *a.questions, a.lead]
        texts += items
        labels += [a.id] * len(items)
    uncovered = load_texts(TRAINING_FILES[0])[COVERED_PREFIX:]
    negatives = load_texts(TRAINING_FILES[1])
    texts += uncovered + negatives
    labels += [UNCOVERED_CLASS] * len(uncovered) + [OFFTOPIC_CLASS] * len(negatives)
    return texts, labels


def _fit(texts: list[str], labels: list[str], embedder: Embedder) -> dict[str, Any]:
    """Fit the vectorizers and the logistic regression (scikit-learn)."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(texts)
    chars = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=2
    ).fit(texts)
    x = sp.hstack(
        [words.transform(texts), chars.transform(texts), sp.csr_matrix(embedder.encode(texts))]
    ).tocsr()
    model = LogisticRegression(C=32.0, class_weight="balanced", max_iter=3000).fit(x, labels)
    word_terms = sorted(words.vocabulary_, key=words.vocabulary_.__getitem__)
    char_terms = sorted(chars.vocabulary_, key=chars.vocabulary_.__getitem__)
    return {
        "classes": np.array([str(c) for c in model.classes_]),
        "word_terms": np.array(word_terms),
        "word_idf": words.idf_.astype(np.float64),
        "char_terms": np.array(char_terms),
        "char_idf": chars.idf_.astype(np.float64),
        "coef": model.coef_.astype(np.float32),
        "intercept": model.intercept_.astype(np.float64),
    }


def _content_key(articles: Sequence[Article]) -> str:
    """Hash of everything the fitted router depends on: this module's version, the model,
    the articles (as parsed) and the raw training files (hashed unparsed: a warm start
    never parses them)."""
    h = hashlib.sha256(ROUTER_VERSION.encode())
    h.update(f"{COVERED_PREFIX}".encode())
    model = model_dir() / "model.safetensors"
    h.update(hashlib.sha256(model.read_bytes()).digest() if model.is_file() else b"-")
    for a in articles:
        parts = [a.id, a.title, a.question, a.lead, *a.questions]
        parts += [f"{s.heading}\x1f{s.text}" for s in a.sections]
        h.update("\x1e".join(parts).encode() + b"\x1d")
    for name in TRAINING_FILES:
        h.update(hashlib.sha256(data_file(name).read_bytes()).digest())
    return h.hexdigest()[:20]


_CACHED_KEYS = (
    "classes",
    "word_terms",
    "word_idf",
    "char_terms",
    "char_idf",
    "coef",
    "intercept",
    "section_vectors",
    "section_indptr",
    "section_indices",
    "section_values",
)


def _load_cached(path: Path) -> dict[str, Any] | None:
    """The fitted router at ``path``, or None when it is missing or unreadable in any way
    (empty, truncated, not a zip, wrong arrays): the caller then refits and rewrites it."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in _CACHED_KEYS}
    except Exception:  # numpy raises OSError, EOFError, BadZipFile, KeyError, ValueError...
        return None


def _save_cached(path: Path, fitted: dict[str, Any]) -> None:
    """Write atomically; a read-only or full disk only costs the next start a refit."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **fitted)
        os.replace(tmp, path)
    except OSError:
        pass
