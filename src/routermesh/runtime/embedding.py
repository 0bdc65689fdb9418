"""The semantic layer (L0): a message against the routes' evidence, in the orchestrator.

The message is embedded by the sentence encoder (:mod:`routermesh.runtime.encoder`)
and judged, with its content words (:mod:`routermesh.runtime.lexical`), by the example
index (:mod:`routermesh.runtime.example_index`) over each route's examples (inline,
``examplesFrom``, learned from feedback) and description phrases
(:mod:`routermesh.runtime.evidence`). The layer answers one of:

- a route with its calibrated confidence (P(in scope) x P(route | in scope));
- the escalation route, cause ``multi_step``, when two clauses of the message go
  confidently to different routes (:mod:`routermesh.runtime.multistep`): decisive;
- the escalation route, cause ``out_of_scope``, when the message is more likely
  outside every route than in one (confidence: that probability), or when the
  escalation route's own examples are nearest.

Every verdict carries the ranked candidates, which the generative judges choose among.
Everything heavy (loading the encoder, embedding the evidence, fitting) happens in
:meth:`EmbeddingLayer.prepare`, in a worker thread, before the router swaps the new
config in: the running config keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from routermesh.runtime import generic_requests
from routermesh.runtime.calibration import TUNED_GENERIC_PRIOR, TUNED_PRIOR, Prior
from routermesh.runtime.contract.config import HeadConfig, LayerConfig, RouterConfig
from routermesh.runtime.decision import Candidate, Reason, Verdict
from routermesh.runtime.encode_batcher import EncodeBatcher
from routermesh.runtime.encoder import STORE, Encoder, EncoderError, EncoderStore, FloatArray
from routermesh.runtime.evidence import (
    Evidence,
    description_evidence,
    route_examples,
    tool_evidence,
    training_pairs,
)
from routermesh.runtime.example_index import (
    ExampleIndex,
    Judgement,
    TrainedHead,
    build_index,
    calibration_report,
)
from routermesh.runtime.head_artifact import HeadManifest, examples_digest, read_manifest
from routermesh.runtime.lexical import content_words
from routermesh.runtime.multistep import JOINED_CANDIDATES, Clause, ClauseRoute, clauses, plan_of

log = logging.getLogger("routermesh.layers")

FeedbackSource = Callable[[int], Awaitable[list[tuple[str, str]]]]
"""Newest reports L0 learns as (message, expected route), newest first: misroutes, and
requests reported with the escalation route."""

MAX_LEARNED = 2_000
"""Newest learnable reports used as examples."""
MESSAGE_CHARS = 2_000
"""The part of a message L0 reads."""
SINGLE_ROUTE_CONFIDENCE = 0.9
"""A message routed with at least this confidence is not checked for several steps (on
CLINC150 val with the trained head, 102 single requests were split without it, 2 with it;
no multi-step request of the dev sets was lost)."""


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
        self._serving: tuple[EncodeBatcher, ExampleIndex] | None = None
        """The encoder's batcher and the index built with that encoder, swapped as one (a
        request never compares one encoder's vector with another's examples)."""
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
    def index(self) -> ExampleIndex | None:
        """The index serving now (None before :meth:`prepare` built one)."""
        return self._index

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
        """Rebuild with the newest learnable reports as examples when they changed; True if
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
            if manifest is None or self._base is None:
                return None, {**report, "state": "pending"}
            current = _made_for(
                manifest, head, training_pairs(self._base, self._config, head.mode), self._routes
            )
        except ValueError as error:
            return None, {**report, "state": "invalid", "error": str(error)[:300]}
        if not current:
            return None, {**report, "state": "stale"}
        return manifest, {
            **report,
            "state": "loaded",
            "mode": manifest.mode,
            "digest": manifest.digest,
            "holdout_accuracy": manifest.holdout_accuracy,
            "trained_examples": manifest.examples,
            "train_seconds": manifest.seconds,
            **({"generic_rows": manifest.generic_rows} if manifest.generic_requests else {}),
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
        evidence = [Evidence(text, route) for text, route in pairs]
        phrases = description_evidence(self._config)
        tools = tool_evidence(self._config)
        evidence += phrases + tools
        if not evidence:
            raise EncoderError(
                "no evidence: add examples, descriptions or examplesFrom to the RouteTables"
            )
        texts = [item.text for item in evidence]
        vectors, encoded = self._store.vectors(key, encoder, texts)
        order = {route: i for i, route in enumerate(self._routes)}
        index = build_index(
            vectors,
            [order[item.route] for item in evidence],
            self._routes,
            self._layer.k,
            queries=np.array([item.request for item in evidence], dtype=bool),
            texts=texts,
            escalation=self._config.escalation.route,
            # A tuned encoder's leave-one-out rows were trained on: its own prior says how
            # far to trust them.
            prior=_tuned_prior(manifest),
        )
        if manifest is not None:
            index.artifact = manifest.digest
            index.clauses_by_route = manifest.generic_rows > 0
        if manifest is not None and manifest.mode == "head":
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
        self._serving = (EncodeBatcher(encoder.encode), index)
        self.learned, self._learned_version = learned, version
        self.stats = {
            "examples": len(pairs),
            "description_phrases": len(phrases),
            "tool_phrases": len(tools),
            "learned": len(learned),
            "encoded": encoded,
            "loo_accuracy": None if index.loo_accuracy is None else round(index.loo_accuracy, 4),
            "calibration": calibration_report(index),
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
        serving = self._serving
        if serving is None:
            return Verdict.abstain(Reason.LAYER_ERROR)
        batcher, index = serving
        text = message[:MESSAGE_CHARS]
        parts = clauses(text) if self._layer.multi_step_threshold is not None else []
        # The message and its clauses in one encoder call, batched with the concurrent
        # requests' (the encoder and the index it was built with swap together).
        vectors = await batcher.encode([text, *(part.text for part in parts)])
        return self._verdict(index, text, vectors[0], parts, vectors[1:])

    def _verdict(
        self,
        index: ExampleIndex,
        text: str,
        query: FloatArray,
        parts: list[Clause],
        part_vectors: FloatArray,
    ) -> Verdict:
        judged = index.classify(query, words=content_words(text))
        candidates = self._candidates(index, judged)
        # A trained artifact's encoder built this index: l0.head's threshold and calibration
        # apply to every answer of it, in either mode.
        head = index.artifact is not None
        escalation = self._config.escalation.route
        out_of_scope = _unit(1.0 - judged.in_scope)
        threshold = self._layer.multi_step_threshold
        joined_threshold = self._layer.multi_step_joined_threshold
        single_route = SINGLE_ROUTE_CONFIDENCE
        if index.clauses_by_route and threshold is not None:
            threshold, joined_threshold = generic_requests.CLAUSE_THRESHOLDS
            single_route = generic_requests.SINGLE_ROUTE_CONFIDENCE
        # A message L0 is this sure belongs to one route is not split: "and" inside one
        # request ("the balance and the routing number") is no second task.
        if parts and threshold is not None and judged.confidence < single_route:
            steps = [
                ClauseRoute(
                    part.text,
                    (j := index.classify(vector, 0, content_words(part.text))).route,
                    _clause_confidence(j, by_route=index.clauses_by_route),
                    part.joined,
                )
                for part, vector in zip(parts, part_vectors, strict=True)
            ]
            plan = plan_of(
                steps,
                threshold,
                escalation,
                joined_threshold=joined_threshold,
                # The message's best few servers: the escalation route's examples being
                # near takes no server out of them.
                candidates=[c.route for c in judged.candidates if c.route != escalation][
                    :JOINED_CANDIDATES
                ],
            )
            if plan:
                return Verdict(
                    route=escalation,
                    confidence=_unit(min(s.confidence for s in steps if s.route in plan)),
                    cause=Reason.MULTI_STEP,
                    # The table's routes it needs; the rest is the reasoning endpoint's.
                    plan=tuple(route for route in plan if route != escalation),
                    out_of_scope=out_of_scope,
                    candidates=candidates,
                    decisive=True,
                    head=head,
                )
        if judged.route == escalation:
            # The escalation route's own examples are nearest: out of scope by example.
            return Verdict(
                route=escalation,
                confidence=_unit(judged.confidence),
                cause=Reason.OUT_OF_SCOPE,
                out_of_scope=out_of_scope,
                candidates=candidates,
                head=head,
            )
        return Verdict(
            route=judged.route,
            confidence=_unit(judged.confidence),
            out_of_scope=out_of_scope,
            candidates=candidates,
            head=head,
        )

    @staticmethod
    def _candidates(index: ExampleIndex, judged: Judgement) -> tuple[Candidate, ...]:
        return tuple(
            Candidate(route=c.route, example=index.texts[c.nearest] if index.texts else "")
            for c in judged.candidates
        )

    def saturated(self) -> bool:
        """The encoder's backlog would make a message wait longer than ``max_queue_ms``."""
        serving, limit = self._serving, self._layer.max_queue_ms
        if serving is None or limit is None:
            return False
        return serving[0].expected_wait() * 1000 > limit

    async def ready(self) -> bool:
        return self._index is not None

    async def warm(self) -> None:
        if self._encoder is not None:
            await asyncio.to_thread(self._encoder.encode, ["warm-up"])


def _unit(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _tuned_prior(manifest: HeadManifest | None) -> Prior | None:
    """The calibration prior of a tuned encoder (none: the packaged encoder's, or a head)."""
    if manifest is None or manifest.mode != "encoder":
        return None
    return TUNED_GENERIC_PRIOR if manifest.generic_rows > 0 else TUNED_PRIOR


def _clause_confidence(judged: Judgement, *, by_route: bool) -> float:
    """A clause's confidence in its route: P(in scope) x P(route), or P(route | in scope)
    alone (``ExampleIndex.clauses_by_route``)."""
    if by_route and judged.in_scope > 0:
        return min(1.0, judged.confidence / judged.in_scope)
    return judged.confidence


def _made_for(
    manifest: HeadManifest,
    head: HeadConfig,
    trained_on: Sequence[tuple[str, str]],
    routes: Sequence[str],
) -> bool:
    """The artifact was made by ``head``'s recipe from these examples and routes."""
    return (
        manifest.mode == head.mode
        and manifest.examples_digest == examples_digest(trained_on, routes)
        and list(manifest.routes) == list(routes)
        and manifest.learned_generic(head.generic_requests)
    )
