"""The semantic layer (L0): nearest examples in a sentence-embedding space.

The message is embedded with a small sentence encoder (all-MiniLM-L6-v2 as ONNX,
run by onnxruntime in the orchestrator: no model server, no PyTorch) and compared
with the embeddings of the RouteTable's example utterances (inline and
``examplesFrom``; ``__escalate__`` rows are examples of the escalation route).
The ``k`` most similar examples vote for their routes, weighted by similarity.

Confidence is calibrated, not the raw vote: a logistic (Platt) model over three
features, the top route's vote share, its best similarity and the margin to the
next route's best similarity, fitted when the index is built by leave-one-out over
the examples themselves (each example classified by the others). Out-of-scope
messages sit far from every example, which the similarity features see and a vote
alone does not.

Everything heavy (loading the encoder, embedding the examples, fitting) happens in
:meth:`EmbeddingLayer.prepare`, in a worker thread, before the router swaps the
new config in: the running config keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routermesh.runtime.config import (
    ESCALATE_ROUTE,
    LayerConfig,
    RouterConfig,
    route_name_from_label,
)
from routermesh.runtime.decision import Reason, Verdict
from routermesh.runtime.head_artifact import HeadManifest, examples_digest, read_manifest

log = logging.getLogger("routermesh.layers")

FeedbackSource = Callable[[int], Awaitable[list[tuple[str, str]]]]
"""Newest reported misroutes as (message, expected route), newest first."""

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

MAX_TOKENS = 128
BATCH = 64
MODEL_FILES = ("model.onnx", "onnx/model.onnx", "onnx/model_quantized.onnx")
TOKENIZER_FILE = "tokenizer.json"
LOO_CHUNK = 256
LOO_LIMIT = 20_000
"""Examples used for the leave-one-out calibration fit (a seeded sample beyond this)."""
DUPLICATE_SIMILARITY = 0.97
"""Neighbours at least this similar are (near) copies of the message: they alone vote, so a
verbatim example, a learned misroute included, decides its own text."""
MAX_LEARNED = 2_000
"""Newest reported misroutes used as examples."""


class EncoderError(Exception):
    pass


def _threads() -> int:
    configured = os.environ.get("ROUTER_MESH_L0_THREADS")
    if configured and configured.isdigit():
        return max(1, int(configured))
    return max(1, min(4, len(os.sched_getaffinity(0))))


class Encoder:
    """A sentence-transformers model exported to ONNX: mean pooling, unit length."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        import onnxruntime as ort  # noqa: PLC0415 - heavy, only where L0 runs
        from tokenizers import Tokenizer  # noqa: PLC0415

        model = next((folder / name for name in MODEL_FILES if (folder / name).is_file()), None)
        tokenizer = folder / TOKENIZER_FILE
        if model is None or not tokenizer.is_file():
            raise EncoderError(
                f"{folder} needs {TOKENIZER_FILE} and one of {', '.join(MODEL_FILES)}"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or _threads()
        options.inter_op_num_threads = 1
        # No busy-waiting between runs: the orchestrator shares its cores with the event
        # loop (and, in a pod, the model servers); spinning threads slowed the numpy step
        # after each encode by milliseconds.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.enable_padding()

    def encode(self, texts: Sequence[str], batch: int = BATCH) -> FloatArray:
        # Batches of similar lengths pad little; the result keeps the input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = []
        for start in range(0, len(order), batch):
            chunk = [texts[i] for i in order[start : start + batch]]
            encodings = self.tokenizer.encode_batch(chunk)
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self.session.run(None, feeds)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            out.append(pooled.astype(np.float32))
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = np.empty((len(texts), out[0].shape[1]), dtype=np.float32)
        vectors[order] = np.concatenate(out)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalized: FloatArray = vectors / np.maximum(norms, 1e-12)
        return normalized


class EncoderStore:
    """Encoders and example vectors kept across config reloads in this process.

    A reload that changes a threshold or one example must not re-embed thousands of
    examples: vectors are looked up by text for the same encoder file, and only new
    texts are encoded. Only the latest set per encoder is kept (bounded memory).
    """

    def __init__(self) -> None:
        self._encoders: dict[str, Encoder] = {}
        self._vectors: dict[str, dict[str, FloatArray]] = {}

    @staticmethod
    def _key(folder: Path) -> str:
        files = [folder / n for n in (*MODEL_FILES, TOKENIZER_FILE) if (folder / n).is_file()]
        return "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)

    def encoder(self, folder: Path) -> tuple[str, Encoder]:
        key = self._key(folder)
        if key not in self._encoders:
            self._encoders = {key: Encoder(folder)}  # one encoder file at a time
            # ... and its vectors only: a head replacing the base encoder frees the base's.
            self._vectors = {k: v for k, v in self._vectors.items() if k == key}
        return key, self._encoders[key]

    def vectors(self, key: str, encoder: Encoder, texts: Sequence[str]) -> tuple[FloatArray, int]:
        """Vectors of ``texts`` (known ones reused) and how many were encoded now."""
        known = self._vectors.get(key, {})
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        fresh = encoder.encode(missing) if missing else None
        table = {t: known[t] for t in texts if t in known}
        if fresh is not None:
            table.update(zip(missing, fresh, strict=True))
        self._vectors[key] = table
        return np.stack([table[t] for t in texts]).astype(np.float32), len(missing)


STORE = EncoderStore()


@dataclass(frozen=True)
class Features:
    """What the calibration sees about one message's neighbours."""

    route: int
    share: float
    best: float
    margin: float

    def vector(self) -> list[float]:
        share = min(max(self.share, 1e-4), 1 - 1e-4)
        return [math.log(share / (1 - share)), self.best, self.margin]


def neighbour_features(sims: FloatArray, labels: IntArray, routes: int, k: int) -> list[Features]:
    """Features of each row of ``sims`` (queries x examples) from its ``k`` nearest."""
    k = max(1, min(k, sims.shape[1]))
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    result = []
    for row, nearest in enumerate(top):
        copies = nearest[sims[row, nearest] >= DUPLICATE_SIMILARITY]
        neighbours = copies if copies.size else nearest
        weights = np.maximum(sims[row, neighbours], 0.0)
        votes = np.bincount(labels[neighbours], weights=weights, minlength=routes)
        best_per_route = np.full(routes, -1.0)
        np.maximum.at(best_per_route, labels[neighbours], sims[row, neighbours])
        route = int(np.argmax(votes))
        total = float(votes.sum())
        others = np.delete(best_per_route, route)
        runner_up = float(others.max()) if others.size else -1.0
        result.append(
            Features(
                route=route,
                share=float(votes[route]) / total if total > 0 else 1.0 / routes,
                best=float(best_per_route[route]),
                margin=float(best_per_route[route]) - max(runner_up, 0.0),
            )
        )
    return result


@dataclass(frozen=True)
class TrainedHead:
    """A linear head over the (fine-tuned) embeddings and its calibration."""

    weights: npt.NDArray[np.float64]
    bias: npt.NDArray[np.float64]
    calibration: list[float]
    digest: str


class RouteGroups:
    """Examples grouped by route, for each route's best similarity in one pass (a gather and
    ``maximum.reduceat``, where ``maximum.at`` took milliseconds over 15,000 examples)."""

    def __init__(self, labels: IntArray, routes: int) -> None:
        self.order = np.argsort(labels, kind="stable")
        grouped = labels[self.order]
        self.present = np.unique(grouped)
        self.starts = np.searchsorted(grouped, self.present)
        self.routes = routes

    def best(self, sims: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
        best = np.full(self.routes, -1.0)
        if len(self.order):
            best[self.present] = np.maximum.reduceat(sims[self.order], self.starts)
        return best


def head_features(
    vector: FloatArray, head: TrainedHead, sims: FloatArray, groups: RouteGroups
) -> Features:
    """Features of one message under a trained head: the head's route and probability,
    and (as for the vote) that route's best similarity (``sims``: to every example) and its
    margin over the other routes' best."""
    logits = head.weights @ vector + head.bias
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    route = int(np.argmax(probabilities))
    best_per_route = groups.best(sims)
    others = np.delete(best_per_route, route)
    runner_up = float(others.max()) if others.size else -1.0
    return Features(
        route=route,
        share=float(probabilities[route]),
        best=float(best_per_route[route]),
        margin=float(best_per_route[route]) - max(runner_up, 0.0),
    )


def fit_platt(x: Sequence[Sequence[float]], y: Sequence[bool], steps: int = 50) -> list[float]:
    """Logistic regression by Newton's method with a small ridge; returns [w..., b]."""
    features = np.array(x, dtype=np.float64)
    design = np.hstack([features, np.ones((len(features), 1))])
    target = np.array(y, dtype=np.float64)
    weights = np.zeros(design.shape[1])
    ridge = 1e-3 * np.eye(design.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(design @ weights, -30, 30)))
        gradient = design.T @ (p - target) + ridge @ weights
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + ridge
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return [float(w) for w in weights]


def platt(weights: Sequence[float], features: Features) -> float:
    z = sum(w * f for w, f in zip(weights[:-1], features.vector(), strict=True)) + weights[-1]
    return 1 / (1 + math.exp(-max(min(z, 30.0), -30.0)))


@dataclass
class ExampleIndex:
    """Example embeddings with their route ids, and the fitted calibration."""

    routes: tuple[str, ...]
    vectors: FloatArray
    labels: IntArray
    k: int
    calibration: list[float]
    loo_accuracy: float
    head: TrainedHead | None = None
    groups: RouteGroups | None = None

    def classify(self, query: FloatArray) -> tuple[str, float, Features]:
        sims = self.vectors @ query
        if self.head is not None and not bool((sims >= DUPLICATE_SIMILARITY).any()):
            # A near copy of an example (a learned misroute included) is decided by its
            # copies below; everything else by the trained head.
            if self.groups is None:
                self.groups = RouteGroups(self.labels, len(self.routes))
            head = head_features(query, self.head, sims, self.groups)
            return self.routes[head.route], platt(self.head.calibration, head), head
        features = neighbour_features(sims[None, :], self.labels, len(self.routes), self.k)[0]
        return self.routes[features.route], platt(self.calibration, features), features


def build_index(
    vectors: FloatArray,
    examples: Sequence[tuple[str, str]],
    routes: Sequence[str],
    k: int,
    seed: int = 0,
) -> ExampleIndex:
    """The index over ``examples`` ((text, route) pairs, embedded as ``vectors``), with
    the calibration fitted leave-one-out."""
    order = {route: i for i, route in enumerate(routes)}
    texts = [text for text, _ in examples]
    labels = np.array([order[route] for _, route in examples], dtype=np.int64)
    rng = np.random.default_rng(seed)
    sample = (
        np.arange(len(texts))
        if len(texts) <= LOO_LIMIT
        else np.sort(rng.choice(len(texts), LOO_LIMIT, replace=False))
    )
    features: list[Features] = []
    # Chunks of 256 queries: argpartition copies a chunk's similarities and returns int64
    # indices for all of them, ~190 MB at 1,024 x 15,000 examples (the pod's memory limit).
    for start in range(0, len(sample), LOO_CHUNK):
        rows = sample[start : start + LOO_CHUNK]
        sims = vectors[rows] @ vectors.T
        sims[np.arange(len(rows)), rows] = -np.inf  # leave the example itself out
        features.extend(neighbour_features(sims, labels, len(routes), k))
    correct = [f.route == labels[i] for f, i in zip(features, sample, strict=True)]
    if all(correct) or not any(correct):
        # Nothing to separate: a flat calibration at the observed accuracy.
        accuracy = sum(correct) / max(len(correct), 1)
        bias = math.log(max(accuracy, 1e-3) / max(1 - accuracy, 1e-3))
        calibration = [0.0, 0.0, 0.0, bias]
    else:
        calibration = fit_platt([f.vector() for f in features], correct)
    return ExampleIndex(
        routes=tuple(routes),
        vectors=vectors,
        labels=labels,
        k=k,
        calibration=calibration,
        loo_accuracy=sum(correct) / max(len(correct), 1),
    )


def route_examples(
    config: RouterConfig, models_dir: Path
) -> tuple[list[tuple[str, str]], list[str]]:
    """(text, route) pairs of every route (inline and ``examplesFrom``), and the labels.

    ``examplesFrom`` rows for routes outside the table are skipped, ``__escalate__``
    rows are examples of the escalation route; duplicates count once.
    """
    routes = list(config.route_names)
    known = set(routes)
    seen: set[tuple[str, str]] = set()
    pairs: list[tuple[str, str]] = []

    def add(text: str, route: str) -> None:
        text = " ".join(text.split())
        if text and route in known and (text, route) not in seen:
            seen.add((text, route))
            pairs.append((text, route))

    for route in config.routes:
        for example in route.examples:
            add(example, route.name)
    for source in config.examples_from:
        for text, label in _jsonl_rows(models_dir / source.path):
            add(
                text,
                config.escalation.route
                if label == ESCALATE_ROUTE
                else route_name_from_label(label),
            )
    return pairs, routes


def _jsonl_rows(path: Path) -> Iterable[tuple[str, str]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (
                isinstance(row, dict)
                and isinstance(row.get("text"), str)
                and isinstance(row.get("route"), str)
            ):
                yield row["text"], row["route"]


class EmbeddingLayer:
    """L0: a :class:`~routermesh.runtime.decision.Classifier` over the example index."""

    def __init__(
        self,
        layer: LayerConfig,
        config: RouterConfig,
        models_dir: Path,
        store: EncoderStore | None = None,
        feedback: FeedbackSource | None = None,
    ) -> None:
        self._layer = layer
        self._config = config
        self._models_dir = models_dir
        self._store = store or STORE
        self._feedback = feedback
        self._encoder: Encoder | None = None
        self._index: ExampleIndex | None = None
        self._base: list[tuple[str, str]] | None = None
        self._routes: list[str] = []
        self.learned: tuple[tuple[str, str], ...] = ()
        self._learned_version = ""
        self.error: str | None = None
        self.stats: dict[str, Any] = {}

    @property
    def learned_version(self) -> str:
        """Digest of the learned examples in use ("" for none): part of the cache key, so a
        decision made before the layer learned is not served after. Computed when the
        index is built, not per request."""
        return self._learned_version

    @property
    def name(self) -> str:
        return self._layer.name

    @property
    def timeout_ms(self) -> int:
        return self._layer.timeout_ms

    async def prepare(self) -> None:
        """Load the encoder and build the index (in a thread); never raises."""
        try:
            learned = self._learnable(await self._feedback(MAX_LEARNED)) if self._feedback else ()
            await asyncio.to_thread(self._build, learned)
        except Exception as error:  # an unusable model makes the layer abstain, not crash
            self.error = f"{type(error).__name__}: {error}"
            log.error(
                "embedding layer unavailable: it abstains",
                extra={"event": "layer_unavailable", "layer": self.name, "error": self.error},
            )

    async def learn(self) -> bool:
        """Rebuild with the newest reported misroutes as examples when they changed; True if
        the layer now answers differently. Never raises (the old index keeps serving)."""
        if self._index is None:
            return False
        try:
            learned = self._learnable(await self._feedback(MAX_LEARNED)) if self._feedback else ()
            if learned == self.learned and not (self.head_pending and self._head_ready()):
                return False
            await asyncio.to_thread(self._build, learned)
        except Exception as error:
            log.error(
                "learning from feedback failed: the index stays",
                extra={"event": "learn_error", "layer": self.name, "error": repr(error)},
            )
            return False
        return True

    def _head_ready(self) -> bool:
        return self._layer.head is not None and self._head()[0] is not None

    def _learnable(self, records: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        """(text, route) pairs from feedback, newest first: known routes only, one route per
        text (the newest report wins), oldest first in the result for a stable digest."""
        known = set(self._config.route_names)
        chosen: dict[str, str] = {}
        for text, route in records:
            flat = " ".join(text.split())
            if flat and route in known and flat not in chosen:
                chosen[flat] = route
        return tuple(reversed(list(chosen.items())))

    def _head(self) -> tuple[HeadManifest | None, dict[str, Any]]:
        """The trained head for the running examples, if its artifact is there, and what
        the layer reports about it. Anything else (not trained yet, trained on other
        examples, unreadable) leaves the base encoder serving."""
        head = self._layer.head
        if head is None:
            return None, {}
        report: dict[str, Any] = {"path": head.path}
        folder = self._models_dir / head.path
        try:
            manifest = read_manifest(folder)
        except ValueError as error:
            return None, {**report, "state": "invalid", "error": str(error)[:300]}
        if manifest is None:
            return None, {**report, "state": "pending"}
        if self._base is None:
            return None, {**report, "state": "pending"}
        if manifest.examples_digest != examples_digest(self._base, self._routes) or list(
            manifest.routes
        ) != list(self._routes):
            return None, {**report, "state": "stale"}
        return manifest, {
            **report,
            "state": "loaded",
            "digest": manifest.digest,
            "holdout_accuracy": manifest.holdout_accuracy,
            "trained_examples": manifest.examples,
            "train_seconds": manifest.seconds,
        }

    @property
    def head_pending(self) -> bool:
        """A head is configured but not in use yet: the learner looks for it again."""
        return self._layer.head is not None and self.stats.get("head", {}).get("state") != "loaded"

    def _build(self, learned: tuple[tuple[str, str], ...] = ()) -> None:
        started = time.monotonic()
        if self._base is None:
            self._base, self._routes = route_examples(self._config, self._models_dir)
        manifest, head_report = self._head()
        folder = self._models_dir / (
            (manifest and self._layer.head and self._layer.head.path) or self._layer.model.path
        )
        key, encoder = self._store.encoder(folder)
        taught = {text for text, _ in learned}
        # A reported text replaces a table example with the same text.
        pairs = [p for p in self._base if p[0] not in taught] + list(learned)
        if not pairs:
            raise EncoderError("no examples: add examples or examplesFrom to the RouteTables")
        vectors, encoded = self._store.vectors(key, encoder, [text for text, _ in pairs])
        index = build_index(vectors, pairs, self._routes, self._layer.k)
        if manifest is not None:
            index.head = TrainedHead(
                weights=np.array(manifest.weights, dtype=np.float64),
                bias=np.array(manifest.bias, dtype=np.float64),
                calibration=list(manifest.calibration),
                digest=manifest.digest,
            )
        parts = [json.dumps(learned)] if learned else []
        if manifest is not None:
            parts.append(manifest.digest)
        # What changes answers beyond the config (learned examples, a loaded head) keys the
        # cache, so a decision made before is not served after.
        version = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16] if parts else ""
        self._encoder, self._index = encoder, index
        self.learned, self._learned_version = learned, version
        self.stats = {
            "examples": len(pairs),
            "learned": len(learned),
            "encoded": encoded,
            "loo_accuracy": round(index.loo_accuracy, 4),
            "seconds": round(time.monotonic() - started, 2),
            "digest": hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()[
                :16
            ],
            **({"head": head_report} if head_report else {}),
        }
        log.info(
            "embedding index built",
            extra={"event": "embedding_index", "layer": self.name, **self.stats},
        )

    async def classify(self, message: str) -> Verdict:
        encoder, index = self._encoder, self._index
        if encoder is None or index is None:
            return Verdict.abstain(Reason.LAYER_ERROR)
        # onnxruntime releases the GIL: other requests go on while this one encodes.
        query = (await asyncio.to_thread(encoder.encode, [message[:2000]]))[0]
        route, confidence, _ = index.classify(query)
        return Verdict(route=route, confidence=min(max(confidence, 0.0), 1.0))

    async def ready(self) -> bool:
        return self._index is not None

    async def warm(self) -> None:
        if self._encoder is not None:
            await asyncio.to_thread(self._encoder.encode, ["warm-up"])
