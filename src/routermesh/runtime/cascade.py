"""The confidence cascade: cache, then each layer in order, then escalation.

A :class:`Cascade` is built for one config (its layers, thresholds and
route-table version) and never changes; a reload builds a new one and swaps it in
(see :mod:`routermesh.runtime.router`), so a request finishes on the cascade it
started with.

What it guarantees:

- it never raises for model or cache trouble: a layer that times out, errors,
  answers garbage or raises goes to the next layer, and the last resort is the
  escalation route (fail open);
- a layer routes only when its confidence reaches the threshold for the route it
  chose (per-route override first, then the layer's own);
- a layer may say a message must escalate: multi-step (decisive, with the ``plan``
  of routes it needs), out of scope (when its probability that no route handles the
  message reaches its threshold), or the escalation route chosen confidently. That
  layer then decides (``layer`` names it) and the reason says why;
- when no layer decides, the escalation reason is the first cause a layer gave
  (``multi_step``, ``out_of_scope``), else why the last layer did not decide;
- later layers that judge among candidates (the generative layers) get the routes
  the first layer ranked highest, so their prompts stay bounded;
- decisions are cached (route, layer, confidence); an escalation is cached only
  when every layer answered and none was confident, never after a layer failure,
  so the cascade retries the models once they recover;
- it asks only layers that can help, and never queues: a layer whose answer could not
  decide (:mod:`routermesh.runtime.reach`) is skipped (``unreachable_threshold``, as if
  disabled), and so is a layer whose model server has every slot busy (``overload``,
  :mod:`routermesh.runtime.admission`): the request moves on at once, failing open;
- an undecided request escalates within :attr:`Cascade.budget` (plus
  :data:`GUARD_SECONDS`): the largest timeout of its layers, not their sum. Each layer
  waits for its own timeout or what is left of the budget, whichever is shorter; a
  layer with nothing left is skipped (``budget``). A layer's call cut short is
  cancelled, which closes its HTTP connection, and llama.cpp then stops the task. Skips
  are traced and metered (``router_layer_skipped_total{layer,reason}``); an escalation
  after ``overload`` or ``budget`` is cached only briefly, as after a failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace

from routermesh.runtime.admission import SlotBook
from routermesh.runtime.cache import CachedDecision, DecisionCache, cache_key
from routermesh.runtime.contract.config import LayerConfig, RouterConfig
from routermesh.runtime.decision import (
    Candidate,
    Classifier,
    Judge,
    Learning,
    Reason,
    Sheddable,
    Verdict,
)
from routermesh.runtime.metrics import RouterMetrics
from routermesh.runtime.reach import unreachable

log = logging.getLogger("routermesh.decisions")

GUARD_SECONDS = 0.05
"""Extra time a layer gets beyond its own timeout before the cascade cuts it off
(layers enforce their timeout themselves; this guards against one that does not)."""


@dataclass(frozen=True)
class LayerOutcome:
    """What one layer said about one message (for logs and the benchmark)."""

    layer: str
    route: str | None
    confidence: float
    reason: Reason | None
    seconds: float
    cause: Reason | None = None
    plan: tuple[str, ...] = ()
    out_of_scope: float | None = None
    candidates: tuple[Candidate, ...] = ()
    decisive: bool = False
    head: bool = False
    """The layer answered with its trained head (its own threshold applies)."""


@dataclass(frozen=True)
class Decision:
    """The cascade's answer for one message."""

    route: str
    layer: str
    """``cache``, the deciding layer's name (``l1``, ``l2``) or ``escalated``."""
    confidence: float
    config_hash: str
    escalation_reason: Reason | None = None
    cache_hit: bool = False
    trace: tuple[LayerOutcome, ...] = field(default=())
    seconds: float = 0.0
    """Time the cascade took to decide (cache lookup and layers)."""
    plan: tuple[str, ...] = ()
    """For a multi-step escalation: the routes the request needs, in order."""
    unavailable: str | None = None
    """The route the layers chose when its MCP server did not answer (the decision then
    names its fallback route or the escalation route)."""

    @property
    def escalated(self) -> bool:
        return self.escalation_reason is not None


def layer_outcome(
    name: str, verdict: Verdict, configured: LayerConfig | None, seconds: float
) -> LayerOutcome:
    """A layer's verdict as the cascade weighs it: its confidence through the layer's
    calibration, or its trained head's when the head answered (a decisive verdict keeps
    its own)."""
    if verdict.route is not None and configured is not None and not verdict.decisive:
        calibrated = configured.calibrated(verdict.confidence, head=verdict.head)
        verdict = replace(verdict, confidence=calibrated)
    return LayerOutcome(
        layer=name,
        route=verdict.route,
        confidence=verdict.confidence,
        reason=verdict.reason,
        seconds=seconds,
        cause=verdict.cause,
        plan=verdict.plan,
        out_of_scope=verdict.out_of_scope,
        candidates=verdict.candidates,
        decisive=verdict.decisive,
        head=verdict.head,
    )


Decided = tuple[str, float, Reason | None, tuple[str, ...]]
"""(route, confidence, escalation reason, plan) of a layer that decides."""


def layer_decides(
    config: RouterConfig, outcome: LayerOutcome, adapted: float | None = None
) -> Decided | None:
    """What ``outcome`` decides under ``config``'s thresholds (``adapted``: the layer's
    threshold moved by feedback), or None when the message goes on to the next layer."""
    escalation = config.escalation.route
    route = outcome.route
    if route is None:
        return None
    if outcome.decisive:
        return (
            escalation,
            outcome.confidence,
            outcome.cause or Reason.CHOSE_ESCALATION,
            outcome.plan,
        )
    threshold = config.threshold_for(outcome.layer, route, adapted, head=outcome.head)
    if outcome.confidence >= threshold:
        if route == escalation:
            return (
                route,
                outcome.confidence,
                outcome.cause or Reason.CHOSE_ESCALATION,
                outcome.plan,
            )
        return route, outcome.confidence, None, ()
    layer_threshold = config.threshold_for(outcome.layer, escalation, adapted, head=outcome.head)
    if outcome.out_of_scope is not None and outcome.out_of_scope >= layer_threshold:
        return escalation, outcome.out_of_scope, Reason.OUT_OF_SCOPE, ()
    return None


class Cascade:
    """Routes messages through ``layers`` for one immutable ``config``."""

    def __init__(
        self,
        config: RouterConfig,
        layers: list[Classifier],
        cache: DecisionCache,
        metrics: RouterMetrics,
        content: str = "",
        *,
        slots: SlotBook | None = None,
    ) -> None:
        self.config = config
        self.content = content
        """Digest of the unpinned sources' content this cascade's layers loaded
        (:func:`routermesh.runtime.content.content_version`)."""
        self.layers = tuple(layers)
        self._cache = cache
        self._metrics = metrics
        self._timeouts = {layer.name: layer.timeout_ms / 1000 for layer in config.layers}
        self._labels = frozenset(config.route_names)
        self._layer_configs = {layer.name: layer for layer in config.layers}
        self.budget = max((self._timeouts.get(x.name, 1.0) for x in self.layers), default=0.0)
        """Most seconds an undecided request spends in the layers (besides the guard)."""
        # Bounded by their servers' slots, shared with the other cascades of this router.
        book = slots or SlotBook()
        self._slots = {
            layer.name: book.for_server(configured.url, configured.max_in_flight)
            for layer in self.layers
            if (configured := self._layer_configs.get(layer.name)) is not None
            and configured.kind == "generative"
        }
        self._learners = [layer for layer in layers if isinstance(layer, Learning)]
        self._in_flight: dict[str, asyncio.Future[Decision]] = {}
        # Verdicts are journaled for feedback to measure only where a layer adapts: no extra
        # cache writes otherwise.
        self._journal = any(x.enabled and x.adaptive is not None for x in config.layers)
        self.adapted: dict[str, float] = {}
        """Layer thresholds moved by feedback outcomes (the router sets them)."""

    @property
    def version(self) -> str:
        """What decisions depend on: the route table, the content of its unpinned sources,
        and what layers learned from feedback since (so a decision cached before a layer
        learned, or before a source changed under the same URI, is not served after)."""
        learned = ",".join(layer.learned_version for layer in self._learners)
        version = self.config.route_table_version + (f"~{self.content}" if self.content else "")
        version += f"+{learned}" if learned.strip(",") else ""
        if self.adapted:
            version += "+" + ",".join(f"{k}={v:g}" for k, v in sorted(self.adapted.items()))
        return version

    async def recall(self, message: str) -> CachedDecision | None:
        """The latest decision for ``message`` under the running route table with what each
        layer said (while it is cached, and only while a layer adapts), for feedback."""
        if not self._journal:
            return await self._cache.get(cache_key(message, self.version))
        return await self._cache.get(self._journal_key(message))

    async def decide(
        self, message: str, *, explain: bool = False, all_layers: bool = False
    ) -> Decision:
        """Route ``message``.

        ``explain`` runs the layers even when the cache knows the answer and leaves the
        cache untouched, so the trace shows what each layer says now. ``all_layers`` (with
        ``explain``) also asks the layers after the deciding one, for calibration and
        benchmarks; the decision is the same as without it.
        """
        started = time.perf_counter()
        key = cache_key(message, self.version)
        cached = None if explain else await self._cache.get(key)
        if cached is not None and cached.route in self._labels:
            self._metrics.cache_hits.inc()
            return self._count(
                message,
                started,
                Decision(
                    route=cached.route,
                    layer="cache",
                    confidence=cached.confidence,
                    config_hash=self.config.config_hash,
                    escalation_reason=Reason.CACHED
                    if cached.route == self.config.escalation.route
                    else None,
                    cache_hit=True,
                    plan=cached.plan,
                ),
            )
        if explain:
            return self._count(message, started, await self._run(message, key, explain, all_layers))
        self._metrics.cache_misses.inc()
        pending = self._in_flight.get(key)
        if pending is not None:
            # The same message is being decided now: share that answer instead of asking
            # the layers again (under load, repeats would otherwise pile onto slow layers).
            await asyncio.wait({pending})
            if not pending.cancelled() and pending.exception() is None:
                self._metrics.coalesced.inc()
                return self._count(message, started, pending.result())
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            decision = await self._run(message, key, explain=False, all_layers=False)
        except BaseException:
            future.cancel()
            raise
        finally:
            if self._in_flight.get(key) is future:
                del self._in_flight[key]
        future.set_result(decision)
        return self._count(message, started, decision)

    async def _run(self, message: str, key: str, explain: bool, all_layers: bool) -> Decision:
        """Ask the layers in order; the first sure one decides, else the escalation route."""
        trace: list[LayerOutcome] = []
        last_reason = Reason.NO_LAYER
        hint: tuple[Reason, tuple[str, ...]] | None = None
        any_failure = False
        candidates: tuple[Candidate, ...] = ()
        deadline = time.perf_counter() + self.budget
        for index, layer in enumerate(self.layers):
            # With all_layers every layer is asked: a benchmark records what it says.
            asked = await self._consult(layer, message, candidates, deadline, every=all_layers)
            outcome = self._checked(asked, trace)
            trace.append(outcome)
            candidates = candidates or outcome.candidates
            if outcome.reason is Reason.UNREACHABLE_THRESHOLD:
                continue  # as if disabled: the escalation says why the asked layers did not
            if outcome.route is None or outcome.reason is not None:
                last_reason = outcome.reason or Reason.LAYER_ERROR
                any_failure = any_failure or last_reason.is_failure
                if last_reason.is_error:
                    self._metrics.layer_errors.labels(layer=layer.name, reason=last_reason).inc()
                continue
            decided = self._decides(outcome)
            if decided is None:
                last_reason = Reason.LOW_CONFIDENCE
                hint = hint or self._hint(outcome)
                continue
            route, confidence, reason, plan = decided
            decision = Decision(
                route=route,
                layer=layer.name,
                confidence=confidence,
                config_hash=self.config.config_hash,
                escalation_reason=reason,
                trace=tuple(trace),
                plan=plan,
            )
            if explain:
                if all_layers:
                    # The decision is made: the later layers get their own timeouts.
                    for later in self.layers[index + 1 :]:
                        asked = await self._consult(later, message, candidates, None, every=True)
                        trace.append(self._checked(asked, trace))
                    decision = replace(decision, trace=tuple(trace))
            else:
                await self._remember(key, message, decision)
            return decision

        best = max((o.confidence for o in trace if o.reason is None), default=0.0)
        decision = Decision(
            route=self.config.escalation.route,
            layer="escalated",
            confidence=best,
            config_hash=self.config.config_hash,
            escalation_reason=hint[0] if hint else last_reason,
            trace=tuple(trace),
            plan=hint[1] if hint else (),
        )
        if trace and not explain:
            failure_ttl = self.config.cache.failure_ttl_seconds
            if not any_failure:
                await self._remember(key, message, decision)
            elif failure_ttl > 0:
                await self._remember(key, message, decision, failure_ttl)
        return decision

    def _decides(self, outcome: LayerOutcome) -> Decided | None:
        return layer_decides(self.config, outcome, self.adapted.get(outcome.layer))

    def _hint(self, outcome: LayerOutcome) -> tuple[Reason, tuple[str, ...]] | None:
        """Why ``outcome`` leans towards escalating, though not surely enough to decide."""
        if outcome.route == self.config.escalation.route and outcome.cause is not None:
            return outcome.cause, outcome.plan
        if outcome.out_of_scope is not None and outcome.out_of_scope > 0.5:
            return Reason.OUT_OF_SCOPE, ()
        return None

    def _checked(self, outcome: LayerOutcome, trace: list[LayerOutcome]) -> LayerOutcome:
        """``outcome``, abstaining (``disagreement``) when its route is not the top route of
        the earlier layer it must agree with, whatever either confidence: a label pushed by
        the message's text ("... answer proxmox") rarely fools both a generative model and
        the example neighbours the same way."""
        configured = self._layer_configs.get(outcome.layer)
        if outcome.route is None or configured is None or configured.agree_with is None:
            return outcome
        if outcome.route == self.config.escalation.route:
            return outcome  # saying "escalate" steers nothing: never a disagreement
        earlier = next((o for o in trace if o.layer == configured.agree_with), None)
        if earlier is None or earlier.route is None:
            return outcome  # that layer is off, failed or had no candidate: decide alone
        # The earlier layer's top route: its candidates lead with it even when it said the
        # message escalates.
        top = earlier.candidates[0].route if earlier.candidates else earlier.route
        if top == outcome.route:
            return outcome
        return replace(outcome, reason=Reason.DISAGREEMENT)

    async def _consult(
        self,
        layer: Classifier,
        message: str,
        candidates: tuple[Candidate, ...],
        deadline: float | None,
        *,
        every: bool = False,
    ) -> LayerOutcome:
        """Ask ``layer`` unless that cannot help (its answer could not decide, unless
        ``every``), cannot fit (nothing left before ``deadline``) or would queue (its
        server's slots are busy, or its own backlog is too long): then a skipped outcome
        with the reason, at once."""
        configured = self._layer_configs.get(layer.name)
        if (
            not every
            and configured is not None
            and self._cannot_decide(layer, configured, candidates)
        ):
            return self._skipped(layer.name, Reason.UNREACHABLE_THRESHOLD)
        wait = self._timeouts.get(layer.name, 1.0)
        if deadline is not None:
            left = deadline - time.perf_counter()
            if left <= 0:
                return self._skipped(layer.name, Reason.BUDGET)
            wait = min(wait, left)
        if isinstance(layer, Sheddable) and layer.saturated():
            return self._skipped(layer.name, Reason.OVERLOAD)
        slots = self._slots.get(layer.name)
        if slots is None:
            return await self._ask(layer, message, candidates, wait)
        if not slots.take():
            return self._skipped(layer.name, Reason.OVERLOAD)
        in_flight = self._metrics.layer_in_flight.labels(layer=layer.name)
        in_flight.set(slots.busy)
        try:
            return await self._ask(layer, message, candidates, wait)
        finally:
            slots.give_back()
            in_flight.set(slots.busy)

    def _cannot_decide(
        self, layer: Classifier, configured: LayerConfig, candidates: tuple[Candidate, ...]
    ) -> bool:
        # A judge answers one of its candidates or escalates; without them, any route.
        judged = candidates if isinstance(layer, Judge) else ()
        routes = frozenset(c.route for c in judged) or None
        return unreachable(self.config, configured, routes, self.adapted.get(configured.name))

    def _skipped(self, layer: str, reason: Reason) -> LayerOutcome:
        self._metrics.layer_skipped.labels(layer=layer, reason=reason).inc()
        return LayerOutcome(layer=layer, route=None, confidence=0.0, reason=reason, seconds=0.0)

    async def _ask(
        self,
        layer: Classifier,
        message: str,
        candidates: tuple[Candidate, ...],
        wait: float,
    ) -> LayerOutcome:
        started = time.perf_counter()
        work = (
            layer.judge(message, candidates)
            if candidates and isinstance(layer, Judge)
            else layer.classify(message)
        )
        try:
            # Cut off, the layer's call is cancelled: its HTTP connection closes and the
            # model server drops the task instead of computing for nobody.
            verdict = await asyncio.wait_for(work, wait + GUARD_SECONDS)
        except TimeoutError:
            verdict = Verdict.abstain(Reason.TIMEOUT)
        except Exception:  # a broken layer must not fail the request
            verdict = Verdict.abstain(Reason.LAYER_ERROR)
        if verdict.route is not None and verdict.route not in self._labels:
            verdict = Verdict.abstain(Reason.INVALID_LABEL)
        return layer_outcome(
            layer.name,
            verdict,
            self._layer_configs.get(layer.name),
            time.perf_counter() - started,
        )

    def _journal_key(self, message: str) -> str:
        # Keyed by the route table alone: learning or an adapted threshold changes the
        # decision cache's key, but feedback still finds what the layers said.
        return cache_key(message, self.config.route_table_version + ":verdicts")

    async def _remember(
        self, key: str, message: str, decision: Decision, ttl: int | None = None
    ) -> None:
        lifetime = ttl or self.config.cache.ttl_seconds
        await self._cache.set(
            key,
            CachedDecision(
                route=decision.route,
                layer=decision.layer,
                confidence=decision.confidence,
                plan=decision.plan,
            ),
            lifetime,
        )
        verdicts = tuple(
            (o.layer, o.route, round(o.confidence, 6))
            for o in decision.trace
            if o.route is not None and o.reason is None
        )
        if verdicts and self._journal:
            await self._cache.set(
                self._journal_key(message),
                CachedDecision(
                    route=decision.route,
                    layer=decision.layer,
                    confidence=decision.confidence,
                    verdicts=verdicts,
                ),
                lifetime,
            )

    def _count(self, message: str, started: float, decision: Decision) -> Decision:
        seconds = time.perf_counter() - started
        decision = replace(decision, seconds=seconds)
        self._metrics.decisions.labels(route=decision.route, layer=decision.layer).inc()
        shed = any(o.reason == Reason.OVERLOAD for o in decision.trace)
        # A shed request is fast, yet it is pressure: the HPA's p95 window counts it as
        # the time the layers could have taken, so shedding scales the mesh out.
        pressure = self.budget + GUARD_SECONDS if shed else None
        self._metrics.observe_latency(decision.layer, seconds, pressure=pressure)
        if decision.escalation_reason is not None:
            self._metrics.escalations.labels(reason=decision.escalation_reason).inc()
        log.info(
            "decision",
            extra={
                "event": "decision",
                "route": decision.route,
                "layer": decision.layer,
                "confidence": round(decision.confidence, 4),
                "latency_ms": round(seconds * 1000, 3),
                "cache_hit": decision.cache_hit,
                "escalation_reason": decision.escalation_reason,
                "plan": list(decision.plan),
                "layers": {
                    o.layer: {
                        "route": o.route,
                        "confidence": round(o.confidence, 4),
                        "reason": o.reason or o.cause,
                        "ms": round(o.seconds * 1000, 3),
                    }
                    for o in decision.trace
                },
                "config_hash": decision.config_hash,
            },
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug("decision message", extra={"event": "decision_message", "text": message})
        return decision
