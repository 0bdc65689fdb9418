"""Generative layers: a prompted model behind an OpenAI-compatible completions server,
judging among the routes L0 ranked highest.

Engine-agnostic: vLLM and llama.cpp servers both answer ``POST /v1/completions``
with ``logprobs`` (top-k log-probabilities of each generated token). The layer asks
for one token of the judge prompt (:mod:`routermesh.runtime.prompts`) and turns its
top log-probabilities into a verdict over the candidates and the two answers of its
own (:func:`routermesh.runtime.labels.verdict_from_logprobs`):

- a candidate route, with its probability renormalized over the answers;
- ``none``: the escalation route, cause ``out_of_scope``;
- ``several``: the escalation route, cause ``multi_step``, plan: the candidates.

Without candidates (L0 disabled or failed), it judges among every route when the
table has no more routes than ``candidates``, and abstains (``no_candidates``)
otherwise: its prompt never grows with the table.

Every failure is an abstention with its reason (timeout, connection error, HTTP
error, unparseable answer, invalid label): the cascade fails open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from routermesh.runtime.contract.config import JUDGE_LABELS, LayerConfig, RouterConfig
from routermesh.runtime.decision import Candidate, Reason, Verdict
from routermesh.runtime.evidence import route_summary
from routermesh.runtime.labels import parse_top_logprobs, verdict_from_logprobs
from routermesh.runtime.prompts import all_routes, judge_prompt

log = logging.getLogger("routermesh.layers")

TOP_LOGPROBS = 20
WARM_MESSAGE = "warm-up"
WARM_TIMEOUT_SECONDS = 120.0
ERROR_TEXT_CHARS = 300


class GenerativeLayer:
    """A :class:`~routermesh.runtime.decision.Classifier` and
    :class:`~routermesh.runtime.decision.Judge` over a completions server."""

    def __init__(self, layer: LayerConfig, config: RouterConfig, client: httpx.AsyncClient) -> None:
        self._layer = layer
        self._client = client
        self._escalation = config.escalation.route
        self._descriptions = {route.name: route_summary(route) for route in config.routes}
        self._everything = all_routes(config)
        # The warm-up's prompt is as long as a real one can be: the first routes, each with
        # its longest example (a prompt over the context fails there, not on a user).
        self._warm_candidates = tuple(
            Candidate(route.name, max(route.examples, key=len, default=""))
            for route in config.routes[: layer.candidates]
        )
        self._timeout = layer.timeout_ms / 1000
        self._warm = False
        self._warming = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.problem: str | None = None
        """Why the layer cannot serve (shown by /readyz); None while it can."""
        self.lost = False
        """The model server went away since the last warm-up (its health check failed, or a
        call could not reach it): a restarted server has lost its prompt cache, so the
        layer warms again once it is back, and /readyz waits for that."""

    @property
    def name(self) -> str:
        return self._layer.name

    async def ready(self) -> bool:
        """The model server answers ``GET /health`` (llama.cpp and vLLM both serve it).

        Never waits for the warm-up: a config change reaches every replica at once, and
        readiness that waited on it would empty the Service. A healthy server whose
        prefix is not warm yet gets its warm-up started in the background; an unhealthy
        one marks the layer ``lost``, so the server that comes back is warmed again.
        """
        try:
            response = await self._client.get(f"{self._layer.url}/health", timeout=1.0)
        except (httpx.HTTPError, ValueError):
            self._server_lost()
            return False
        if response.status_code != httpx.codes.OK:
            self._server_lost()
            return False
        if not self._warm and not self._warming.locked():
            task = asyncio.create_task(self.warm())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    def _server_lost(self) -> None:
        self.lost = True
        self._warm = False

    @property
    def warmed(self) -> bool:
        return self._warm

    async def warm(self) -> None:
        """One judgement with a generous timeout, so the server computes and caches the
        fixed instruction once; without it the first requests after a (re)load would pay
        for it and time out. A failure is logged with the server's own words (a prompt
        over the context says so) and shown by /readyz."""
        async with self._warming:
            if self._warm:
                return
            started = time.perf_counter()
            prompt = judge_prompt(WARM_MESSAGE, self._warm_candidates, self._descriptions)
            try:
                response = await self._client.post(
                    f"{self._layer.url}/v1/completions",
                    json=self._body(prompt),
                    timeout=WARM_TIMEOUT_SECONDS,
                )
                if response.status_code >= 400:
                    raise _ServerError(response.status_code, response.text[:ERROR_TEXT_CHARS])
                parse_top_logprobs(response.json())
            except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError) as error:
                problem = f"warm-up failed: {_describe(error)}"
                if problem != self.problem:  # retried at every health check: said once
                    log.warning(
                        "layer warm-up failed",
                        extra={"event": "warm_failed", "layer": self.name, "error": problem},
                    )
                self.problem = problem
                return
            self._warm = True
            self.lost = False
            self.problem = None
            log.info(
                "layer warm",
                extra={
                    "event": "warm",
                    "layer": self.name,
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )

    def _body(self, prompt: str) -> dict[str, Any]:
        return {
            "model": self._layer.name,
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": TOP_LOGPROBS,
        }

    def prompt(self, message: str, candidates: tuple[Candidate, ...] = ()) -> str:
        chosen = self._chosen(candidates) or self._everything
        return judge_prompt(message, chosen, self._descriptions)

    async def classify(self, message: str) -> Verdict:
        """Judge among every route: only for a table no larger than ``candidates``."""
        if len(self._everything) > self._layer.candidates:
            return Verdict.abstain(Reason.NO_CANDIDATES)
        return await self._ask(message, self._everything)

    async def judge(self, message: str, candidates: tuple[Candidate, ...]) -> Verdict:
        chosen = self._chosen(candidates)
        if not chosen:
            return await self.classify(message)
        return await self._ask(message, chosen)

    def _chosen(self, candidates: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
        routes = [c for c in candidates if c.route in self._descriptions]
        return tuple(routes[: self._layer.candidates])

    async def _ask(self, message: str, candidates: tuple[Candidate, ...]) -> Verdict:
        prompt = judge_prompt(message, candidates, self._descriptions)
        try:
            response = await self._client.post(
                f"{self._layer.url}/v1/completions", json=self._body(prompt), timeout=self._timeout
            )
        except httpx.TimeoutException:
            return Verdict.abstain(Reason.TIMEOUT)
        except httpx.ConnectError:
            # Nothing listens (down, or restarting): what comes back must be warmed again.
            # Not any transport error: a dropped keep-alive connection is no restart.
            self._server_lost()
            return Verdict.abstain(Reason.CONNECTION_ERROR)
        except httpx.TransportError:
            return Verdict.abstain(Reason.CONNECTION_ERROR)
        if response.status_code >= 400:
            return Verdict.abstain(Reason.HTTP_ERROR)
        try:
            top = parse_top_logprobs(response.json())
        except (ValueError, KeyError, TypeError, IndexError):
            return Verdict.abstain(Reason.PARSE_ERROR)
        return self._answer(top, tuple(c.route for c in candidates))

    def _answer(self, top: dict[str, float], routes: tuple[str, ...]) -> Verdict:
        """The verdict of the first token's log-probabilities: a candidate route, or the
        escalation route for "none" (out of scope) and "several" (multi-step)."""
        verdict = verdict_from_logprobs(top, [*routes, *JUDGE_LABELS])
        causes = {JUDGE_LABELS[0]: Reason.OUT_OF_SCOPE, JUDGE_LABELS[1]: Reason.MULTI_STEP}
        cause = causes.get(verdict.route or "")
        if cause is None:
            return verdict
        return Verdict(
            route=self._escalation,
            confidence=verdict.confidence,
            cause=cause,
            plan=routes if cause is Reason.MULTI_STEP else (),
        )


class _ServerError(ValueError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {' '.join(text.split())}")


def _describe(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}"[:ERROR_TEXT_CHARS] if text else type(error).__name__
