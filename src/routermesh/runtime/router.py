"""The running router: the current config and cascade, live reload, cache and feedback.

Live reload: the pod mounts the ConfigMap as a directory; the kubelet updates it
by writing a new timestamped folder and swapping the ``..data`` symlink, so the
file's inode and even its path's target change. The watcher therefore polls the
directory (re-reading ``router.json`` through the link, comparing digests of the
bytes) instead of watching one file. A new config is parsed, its digests checked
and its layers built before anything changes; then one reference assignment swaps
it in. Requests already running finish on the cascade they started with.

Routes whose target is an MCP server are watched (:mod:`routermesh.runtime.discovery`):
the tools a server lists become evidence of its route, so a changed tool list rebuilds
the layers the same way (the config as rendered, with the tools; a new route-table
version, the same config hash), and a server that stops answering makes its route's
requests fail open while it is down (:mod:`routermesh.runtime.availability`).

An invalid config (unparseable, wrong schema, digests that do not match the
content) is rejected: the running config stays, the error is logged and counted in
``router_config_reload_errors_total``, and the reported hash stays the old one. A
removed config directory is the same kind of error. The same bad bytes are
reported once, not on every poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from routermesh.runtime import source_error
from routermesh.runtime.adaptive import AdaptiveState, Outcome, adapt
from routermesh.runtime.admission import SlotBook
from routermesh.runtime.availability import redirect
from routermesh.runtime.cache import DecisionCache, MemoryCache, RedisCache
from routermesh.runtime.cascade import Cascade, Decision
from routermesh.runtime.content import content_version
from routermesh.runtime.contract.config import (
    CONFIG_FILENAME,
    MODELS_DIR,
    CacheConfig,
    RouterConfig,
)
from routermesh.runtime.decision import Classifier, Learning
from routermesh.runtime.discovery import Discovery
from routermesh.runtime.embedding import EmbeddingLayer
from routermesh.runtime.feedback import MemoryFeedback, RedisFeedback
from routermesh.runtime.layers import LayerContext, build_layers, prepare_layers
from routermesh.runtime.metrics import RouterMetrics
from routermesh.runtime.reach import unreachable_problems

log = logging.getLogger("routermesh.router")

POLL_SECONDS = 1.0
CLOSE_GRACE_SECONDS = 5.0
"""How long a replaced cache stays open for requests still using it."""


class ConfigError(Exception):
    """A config that cannot be loaded; the message says why (never its content)."""


@dataclass(frozen=True)
class RouterState:
    config: RouterConfig
    cascade: Cascade


MAX_OUTCOMES = 10_000
"""Newest feedback records replayed for adaptive thresholds (the store keeps 10,000)."""
HEALTH_SECONDS = 2.0
"""How often the layers' model servers are checked besides the readiness probes: a model
server restarted between two probes (or in local mode, where nothing probes) is still
seen gone, and warmed again once back."""
LEARN_SECONDS = 30.0
"""How often layers look for new feedback (``ROUTER_MESH_LEARN_SECONDS`` overrides)."""


def _learn_seconds() -> float:
    try:
        return max(0.05, float(os.environ.get("ROUTER_MESH_LEARN_SECONDS", LEARN_SECONDS)))
    except ValueError:
        return LEARN_SECONDS


def read_config(directory: Path) -> tuple[RouterConfig, str]:
    """Load and verify ``directory/router.json``; returns the config and a digest of its
    bytes. Raises :class:`ConfigError`."""
    path = directory / CONFIG_FILENAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError as error:
        raise ConfigError(f"{path} does not exist") from error
    except OSError as error:
        raise ConfigError(f"{path} cannot be read: {error.strerror}") from error
    digest = hashlib.sha256(raw).hexdigest()
    try:
        config = RouterConfig.from_json(raw)
        config.verify_digests()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in error.errors()[:5]
        )
        raise ConfigError(f"{path} is not a valid router config: {problems}") from error
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from error
    return config, digest


TOOLS_SETTLE_SECONDS = 0.2
"""Pause between a tool-list change and the rebuild it causes (changes coming together
are built once)."""


def _discovery_wait(config: RouterConfig) -> float:
    """How long a first load waits for the MCP servers' first answers: the longest of
    their timeouts, a connection and a list page or two."""
    timeouts = [r.mcp.timeout_ms / 1000 for r in config.routes if r.mcp is not None]
    return 2 * max(timeouts, default=0.0)


def _cache_settings(config: RouterConfig) -> tuple[CacheConfig, str]:
    """What decides whether the cache must be rebuilt: its settings and, for a Redis URL
    from a Secret file, the file's current content (a rotated Secret reconnects)."""
    settings = config.cache.model_copy(update={"ttl_seconds": 0, "failure_ttl_seconds": 0})
    source = ""
    if config.cache.redis_url_file:
        try:
            source = hashlib.sha256(Path(config.cache.redis_url_file).read_bytes()).hexdigest()
        except OSError:
            source = "unreadable"
    return settings, source


def read_secret_file(path: str) -> str:
    """A mounted Secret key's value, stripped; raises :class:`ConfigError` naming the file."""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(f"secret file {path} cannot be read: {error.strerror}") from error


class Router:
    """Owns everything with a lifetime: the HTTP client, cache, feedback store, watcher."""

    def __init__(
        self,
        config_dir: str | Path,
        *,
        models_dir: str | Path = MODELS_DIR,
        metrics: RouterMetrics | None = None,
        poll_seconds: float = POLL_SECONDS,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.config_dir = Path(config_dir)
        self.models_dir = Path(models_dir)
        self.metrics = metrics or RouterMetrics()
        self._poll = poll_seconds
        # Separate pools: slow dispatches to targets must never starve the layers' calls.
        self.client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=128, max_keepalive_connections=32),
            trust_env=False,
        )
        self.dispatch_client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            trust_env=False,
        )
        self._state: RouterState | None = None
        self._slots = SlotBook()
        """The model servers' in-flight bounds, shared by the cascades a reload swaps."""
        self._cache: DecisionCache | None = None
        self._cache_settings: tuple[CacheConfig, str] | None = None
        self.feedback: MemoryFeedback | RedisFeedback = MemoryFeedback()
        self.adaptive: dict[str, AdaptiveState] = {}
        """Each adaptive layer's threshold state, for the running route table."""
        self._adaptive_version: str | None = None
        self._seen_digest: str | None = None
        self._last_error: str | None = None
        self._source_error: str | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._warmed_once: set[str] = set()
        # background work: warm-ups, closes, feedback from dispatched answers
        self._closing: set[asyncio.Task[object]] = set()
        self._learner: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None
        self._raw: RouterConfig | None = None
        """The config as loaded (without the tools discovered on the MCP servers)."""
        self.discovery = Discovery(self.metrics, self._tools_changed)
        self._tools_event: asyncio.Event | None = None
        self._tools_task: asyncio.Task[None] | None = None
        self._applying = asyncio.Lock()
        self.learn_seconds = _learn_seconds()
        self.health_seconds = HEALTH_SECONDS

    @property
    def state(self) -> RouterState | None:
        """The current config and cascade (``None`` until a valid config was loaded)."""
        return self._state

    @property
    def last_error(self) -> str | None:
        """The latest reload error, cleared by the next successful load; first, why the
        config's sources no longer render, while they do not (local mode)."""
        errors = [error for error in (self._source_error, self._last_error) if error]
        return "; ".join(errors) or None

    async def start(self) -> None:
        # The first load runs in the background too: building a large L0 index takes a
        # while, and /healthz must answer meanwhile (the API says 503 until it is loaded).
        self._watcher = asyncio.create_task(self._watch(), name="config-watcher")
        self._learner = asyncio.create_task(self._learn_loop(), name="feedback-learner")
        self._health = asyncio.create_task(self._health_loop(), name="layer-health")
        self._tools_event = asyncio.Event()
        self._tools_task = asyncio.create_task(self._tools_loop(), name="mcp-tools")

    async def stop(self) -> None:
        await self.discovery.stop()
        for task in (self._watcher, self._learner, self._health, self._tools_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        pending = list(self._closing)
        for work in pending:
            work.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._cache is not None:
            await self._cache.close()
        await self.feedback.close()
        await self.client.aclose()
        await self.dispatch_client.aclose()

    async def __aenter__(self) -> Router:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def reload(self) -> bool:
        """Load the config directory if its content changed; True when a new config runs."""
        self._read_source_error()
        try:
            config, digest = read_config(self.config_dir)
        except ConfigError as error:
            self._reject(str(error))
            return False
        if digest == self._seen_digest:
            return False
        current = self._state
        if current is not None and current.config.config_hash == config.config_hash:
            self._seen_digest = digest
            self._last_error = None  # the running config is back in place
            return False
        try:
            await self.discovery.sync(config)
            if current is None:
                # A new pod's first decisions use the tools: wait for each server's first
                # answer (or failure), bounded by its timeout.
                await self.discovery.wait_settled(_discovery_wait(config))
            self._raw = config
            await self._apply(config.with_tools(self.discovery.tools()))
        except ConfigError as error:
            # Not remembered as seen: a Secret mounted later makes the same file valid.
            self._reject(str(error))
            return False
        except Exception as error:  # a config must never take the router down
            log.exception("config swap failed", extra={"event": "config_swap_error"})
            self._reject(f"config could not be applied: {type(error).__name__}")
            return False
        self._seen_digest = digest
        return True

    async def _apply(self, config: RouterConfig) -> None:
        """Build ``config``'s layers and swap them in; raises what the build raises."""
        async with self._applying:
            cache, feedback = self._cache_for(config)
            context = LayerContext(
                self.client,
                self.models_dir,
                feedback=partial(self._learnable_feedback, config.escalation.route),
            )
            content = await asyncio.to_thread(content_version, config, self.models_dir)
            layers = build_layers(config, context)
            # Heavy set-up (an encoder, example embeddings) before the swap: the running
            # config keeps serving until the new one is ready.
            await prepare_layers(layers)
            self._swap(config, layers, cache, feedback, content)

    def _tools_changed(self) -> None:
        if self._tools_event is not None:
            self._tools_event.set()

    async def _tools_loop(self) -> None:
        """Rebuild the layers when the tools of an MCP route change (after a short pause,
        so a burst of changes builds once)."""
        event = self._tools_event
        if event is None:
            return
        while True:
            await event.wait()
            await asyncio.sleep(TOOLS_SETTLE_SECONDS)
            event.clear()
            raw, state = self._raw, self._state
            if raw is None or state is None or state.config.config_hash != raw.config_hash:
                continue  # the next reload builds with the tools anyway
            config = raw.with_tools(self.discovery.tools())
            if config.route_table_version == state.config.route_table_version:
                continue
            try:
                await self._apply(config)
                log.info(
                    "route evidence from MCP tools applied",
                    extra={
                        "event": "mcp_tools_applied",
                        "route_table_version": config.route_table_version,
                        "tools": {name: len(t) for name, t in self.discovery.tools().items()},
                    },
                )
            except Exception:  # the running layers keep serving
                log.exception(
                    "MCP tools could not be applied", extra={"event": "mcp_tools_apply_error"}
                )

    def serve(self, decision: Decision) -> Decision:
        """The decision as served now: around a route whose MCP server does not answer."""
        state = self._state
        unavailable = self.discovery.unavailable()
        if state is None or not unavailable:
            return decision
        return redirect(decision, state.config, unavailable, self.metrics)

    def _swap(
        self,
        config: RouterConfig,
        layers: list[Classifier],
        cache: DecisionCache,
        feedback: MemoryFeedback | RedisFeedback,
        content: str = "",
    ) -> None:
        """Commit the new config with its built cache, feedback store and layers in one step."""
        cascade = Cascade(config, layers, cache, self.metrics, content, slots=self._slots)
        previous = self._state
        if cache is not self._cache and self._cache is not None:
            self._close_later(self._cache, self.feedback)
        if cache is not self._cache:
            self._cache, self.feedback = cache, feedback
            self._cache_settings = _cache_settings(config)
        self._state = RouterState(config=config, cascade=cascade)
        self._carry_adaptive(config, cascade)
        self._report_learning(cascade)
        for layer in cascade.layers:
            self.background(layer.warm())
        self._last_error = None
        self.metrics.set_config(config.config_hash)
        self.metrics.layers_budget.set(cascade.budget)
        for name, problem in unreachable_problems(config).items():
            log.warning(
                "layer can never decide: it is not asked",
                extra={"event": "layer_unreachable", "layer": name, "problem": problem},
            )
        log.info(
            "config loaded",
            extra={
                "event": "config_loaded",
                "config_hash": config.config_hash,
                "previous_hash": previous.config.config_hash if previous else None,
                "routes": len(config.routes),
                "layers": [layer.name for layer in config.layers if layer.enabled],
                "cache": config.cache.backend,
                "layers_budget_ms": round(cascade.budget * 1000),
            },
        )

    def _read_source_error(self) -> None:
        error = source_error.read(self.config_dir)
        if error == self._source_error:
            return
        self._source_error = error
        if error is not None:
            self.metrics.config_reload_errors.inc()
            log.error(
                "config sources rejected, keeping the running config",
                extra={
                    "event": "config_source_rejected",
                    "reason": error,
                    "config_hash": self._state.config.config_hash if self._state else None,
                },
            )

    def _reject(self, error: str) -> None:
        # Report a given failure once: the watcher polls every second.
        if error == self._last_error:
            return
        self._last_error = error
        self.metrics.config_reload_errors.inc()
        running = self._state.config.config_hash if self._state else None
        log.error(
            "config rejected, keeping the running one",
            extra={"event": "config_rejected", "reason": error, "config_hash": running},
        )
        # Forget the last digest: the same file is read again (and reported once) until it
        # is fixed, and the running config coming back clears the error.
        self._seen_digest = None

    def _cache_for(
        self, config: RouterConfig
    ) -> tuple[DecisionCache, MemoryFeedback | RedisFeedback]:
        """The running cache and feedback store when their settings are unchanged (TTL is
        applied per write), else new ones; nothing is replaced here."""
        if self._cache is not None and _cache_settings(config) == self._cache_settings:
            return self._cache, self.feedback
        if config.cache.backend != "redis":
            return MemoryCache(config.cache.max_entries), MemoryFeedback()
        url = config.cache.redis_url or read_secret_file(config.cache.redis_url_file or "")
        try:
            cache = RedisCache(url, self.metrics, fallback=MemoryCache(config.cache.max_entries))
            feedback = RedisFeedback(url, config.mesh.name, self.metrics)
        except ValueError as error:
            raise ConfigError(f"the Redis URL is not valid: {type(error).__name__}") from error
        return cache, feedback

    def _close_later(self, cache: DecisionCache, feedback: MemoryFeedback | RedisFeedback) -> None:
        async def close() -> None:
            await asyncio.sleep(CLOSE_GRACE_SECONDS)
            await cache.close()
            await feedback.close()

        self.background(close())

    def background(self, work: Coroutine[Any, Any, object]) -> None:
        """Run ``work`` without waiting for it (cancelled if still running at stop)."""
        task = asyncio.create_task(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _learnable_feedback(self, escalation: str, limit: int) -> list[tuple[str, str]]:
        """The reports L0 learns as examples (:meth:`FeedbackRecord.learnable`), every
        replica's (Redis) or this one's, newest first."""
        return [
            (r.message, r.expected_route)
            for r in await self.feedback.recent(limit)
            if r.learnable(escalation)
        ]

    def _carry_adaptive(self, config: RouterConfig, cascade: Cascade) -> None:
        """Adapted thresholds survive a reload that leaves the decisions' inputs alone; a new
        route table or layer settings start from the configured thresholds again."""
        if config.route_table_version != self._adaptive_version:
            self._adaptive_version = config.route_table_version
            self.adaptive = {
                layer.name: AdaptiveState(configured=layer.threshold, threshold=layer.threshold)
                for layer in config.layers
                if layer.enabled and layer.adaptive is not None
            }
        cascade.adapted = {
            name: state.threshold
            for name, state in self.adaptive.items()
            if state.threshold != state.configured
        }
        self._report_adaptive()

    async def adapt(self, now: float | None = None) -> bool:
        """Move the adaptive layers' thresholds by the feedback outcomes of the running route
        table (``runtime/adaptive.py``); True when one moved."""
        state = self._state
        if state is None or not self.adaptive:
            return False
        now = time.time() if now is None else now
        records = [
            r
            for r in await self.feedback.recent(MAX_OUTCOMES)
            if r.route_table_version == state.config.route_table_version
        ]
        moved = False
        for layer in state.config.layers:
            current = self.adaptive.get(layer.name)
            if current is None or layer.adaptive is None:
                continue
            # Routing decisions only: a layer choosing the escalation route sends the request
            # on, and counting those as right would let the threshold fall on easy wins.
            escalation = state.config.escalation.route
            outcomes = [
                Outcome(confidence=confidence, correct=route == r.expected_route, at=r.received_at)
                for r in records
                for name, route, confidence in r.verdicts
                if name == layer.name and route != escalation
            ]
            new = adapt(outcomes, current, layer.adaptive, now)
            self.adaptive[layer.name] = new
            if new.threshold != current.threshold:
                moved = True
                self.metrics.threshold_updates.labels(layer=layer.name, outcome=new.state).inc()
                log.info(
                    "threshold adapted",
                    extra={
                        "event": "threshold_adapted",
                        "layer": layer.name,
                        "from": current.threshold,
                        "to": new.threshold,
                        "state": new.state,
                        "reason": new.reason,
                        "samples": new.samples,
                    },
                )
        if moved:
            self._carry_adaptive(state.config, state.cascade)
        else:
            self._report_adaptive()
        return moved

    def _report_adaptive(self) -> None:
        for name, state in self.adaptive.items():
            self.metrics.adaptive_threshold.labels(layer=name).set(state.threshold)
            self.metrics.adaptive_samples.labels(layer=name).set(state.samples)

    async def learn(self) -> bool:
        """Let the running layers learn from new feedback; True when one changed. Decisions
        cached before are not served after (the cascade's version changes)."""
        state = self._state
        if state is None:
            return False
        changed = False
        for layer in state.cascade.layers:
            if isinstance(layer, Learning) and await layer.learn():
                changed = True
                self.metrics.learning_refreshes.labels(layer=layer.name).inc()
                log.info(
                    "layer learned from feedback",
                    extra={
                        "event": "learned",
                        "layer": layer.name,
                        "examples": len(layer.learned),
                        "version": layer.learned_version,
                    },
                )
        self._report_learning(state.cascade)
        if await self.adapt():
            changed = True
        return changed

    def _report_learning(self, cascade: Cascade) -> None:
        for layer in cascade.layers:
            if isinstance(layer, Learning):
                self.metrics.learned_examples.labels(layer=layer.name).set(len(layer.learned))
            if isinstance(layer, EmbeddingLayer) and "head" in layer.stats:
                loaded = layer.stats["head"].get("state") == "loaded"
                self.metrics.head_loaded.labels(layer=layer.name).set(1 if loaded else 0)

    async def _learn_loop(self) -> None:
        while True:
            await asyncio.sleep(self.learn_seconds)
            try:
                await self.learn()
            except Exception:  # learning must never take the router down
                log.exception("feedback learner error", extra={"event": "learn_loop_error"})

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_seconds)
            try:
                await self.readiness()
            except Exception:  # a health check must never take the router down
                log.exception("layer health check error", extra={"event": "health_loop_error"})

    async def _watch(self) -> None:
        first = True
        while True:
            if not first:
                await asyncio.sleep(self._poll)
            first = False
            try:
                await self.reload()
            except Exception:  # the watcher must survive anything a bad config does
                log.exception("config watcher error", extra={"event": "config_watch_error"})

    async def degraded(self) -> list[str]:
        """Dependencies that are down while a fallback serves in their place (``cache``:
        Redis unreachable, decisions come from the in-process cache). Reported, never a
        reason to be unready: routing goes on."""
        cache = self._cache
        if isinstance(cache, RedisCache) and not await cache.ping():
            return ["cache"]
        return []

    def problems(self) -> dict[str, str]:
        """Why a layer cannot serve, by layer (a warm-up the model server refused, with its
        own words; a calibration that keeps it from ever deciding): what /readyz shows
        beside the checks. Never a reason to be unready: the cascade goes on without it."""
        state = self._state
        if state is None:
            return {}
        found = unreachable_problems(state.config)
        for layer in state.cascade.layers:
            problem = getattr(layer, "problem", None) or getattr(layer, "error", None)
            if problem:
                found[layer.name] = "; ".join(filter(None, (found.get(layer.name), str(problem))))
        return found

    async def readiness(self) -> dict[str, bool]:
        """``config`` and one entry per enabled layer: True when it can answer.

        A layer counts once its model server is healthy and, the first time since this
        process started, its prompt prefix is warm: a new pod stays out of the Service
        until it answers fast. After a reload the new prefix warms in the background
        without taking the pod out again (every replica reloads at once). A model server
        that went away (a crash, a restart) comes back with an empty prompt cache: the
        layer counts again only once it is warm again, as after the start.
        """
        state = self._state
        if state is None:
            return {"config": False}
        layers = state.cascade.layers
        answers = await asyncio.gather(*(layer.ready() for layer in layers), return_exceptions=True)
        checks = {}
        for layer, ok in zip(layers, answers, strict=True):
            healthy = ok is True
            warmed = getattr(layer, "warmed", None)
            if warmed is None:  # nothing to warm (L0 runs in this process)
                checks[layer.name] = healthy
                continue
            if layer.name in self._warmed_once and not (
                healthy and not getattr(layer, "lost", False)
            ):
                self._warmed_once.discard(layer.name)
                self.metrics.model_server_outages.labels(layer=layer.name).inc()
                log.warning(
                    "model server lost: the layer is ready again once it is back and warm",
                    extra={"event": "model_server_lost", "layer": layer.name},
                )
            if healthy and warmed:
                self._warmed_once.add(layer.name)
            checks[layer.name] = healthy and layer.name in self._warmed_once
        return {"config": True, **checks}
