"""The router config: the contract between the operator and the runtime.

The operator renders one :class:`RouterConfig` per RouterMesh into the ConfigMap
``<mesh>-config`` (key :data:`CONFIG_FILENAME`); the orchestrator loads the same
schema from the mounted directory and reloads it when the file changes. Local
mode writes the same file to a local directory. Nothing else defines this shape.

The config never holds a secret value: credentials are referenced as files
that the pod mounts from Secrets (see :data:`SECRETS_DIR`).

Two digests travel with every config:

- ``config_hash``: over everything in the config. Same input, same hash; any
  change to a threshold, timeout, target, route or example gives a new hash.
  The orchestrator reports the hash it runs, so the operator can tell when a
  change has been applied.
- ``route_table_version``: over what decides *which route a message gets*
  (routes, their descriptions, examples and thresholds, example sources, the
  escalation route, the layers' models, thresholds and whether they are enabled).
  The runtime puts it into its cache keys, so a change of any of these never
  serves a stale decision (a cached escalation included), while a timeout,
  target or cache change keeps the cache warm (those are applied at serve time).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION: Literal[1] = 1
CONFIG_FILENAME = "router.json"
"""Key in the ConfigMap and file name in the mounted config directory."""

CONFIG_DIR = "/etc/router-mesh"
"""Where the pod mounts the ConfigMap (as a directory, never via subPath)."""

MODELS_DIR = "/models"
HEADS_DIR = "heads"
"""Folder of the trained heads' artifacts under the models directory."""
"""Where the pod mounts the shared models volume (read-only in model servers)."""

SECRETS_DIR = "/var/run/secrets/router-mesh"
"""Where Secret keys the runtime needs are mounted, one sub-directory per use."""

MCP_SECRETS_DIR = f"{SECRETS_DIR}/mcp"
"""MCP servers' credentials: ``<MCP_SECRETS_DIR>/<Secret name>/<key>``, one mount per
Secret whichever routes use it."""

LAYER_PORTS: dict[str, int] = {"l1": 8081, "l2": 8082}
"""Model server port of each generative layer, on the pod's loopback (L0 runs in the
orchestrator and has none)."""

ORCHESTRATOR_PORT = 8080
MAX_ORCHESTRATOR_WORKERS = 8
"""Orchestrator processes that may share the API port (``router-mesh local --workers``)."""

OPERATIONS_PORT = 9090
"""The orchestrator's health and metrics port in the pod (``--ops-port``), apart from the
API so that each can be exposed (and authenticated or firewalled) on its own."""

ESCALATE_ROUTE = "__escalate__"

JUDGE_LABELS = ("none", "several")
"""The generative judges' answers besides the candidate routes: no candidate handles the
message, or it needs several. Route names may not begin them or be begun by them."""

MAX_CANDIDATES = 8

JUDGE_NAME_BYTES = 63
JUDGE_DESCRIPTION_BYTES = 240
JUDGE_EXAMPLE_BYTES = 160
JUDGE_MESSAGE_BYTES = 400
"""The generative judges' prompt parts are cut to these UTF-8 byte lengths."""
JUDGE_FIXED_BYTES = 1024
"""An upper bound on the judge prompt's fixed text (instruction, chat template, options,
one line's framing per candidate aside): ``runtime/prompts.py`` stays below it."""
JUDGE_LINE_BYTES = 32
"""An upper bound on the framing of one candidate's lines (dash, colon, quotes)."""


def judge_prompt_bound(candidates: int) -> int:
    """Most tokens a judge prompt with ``candidates`` routes can take, the answer included.

    Byte-level BPE tokenizers (SmolLM2's, Qwen2.5's) never make more tokens than the text
    has UTF-8 bytes, so a bound in bytes is a bound in tokens."""
    per_candidate = (
        JUDGE_LINE_BYTES + JUDGE_NAME_BYTES + JUDGE_DESCRIPTION_BYTES + JUDGE_EXAMPLE_BYTES
    )
    return JUDGE_FIXED_BYTES + candidates * per_candidate + JUDGE_MESSAGE_BYTES + 1


"""Route value that labelled datasets use for out-of-scope requests."""

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

RouteName = Annotated[str, Field(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Sha256 = Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]


class ContractModel(BaseModel):
    """Strict, immutable base: a config that does not match the contract is rejected whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class McpConfig(ContractModel):
    """How the orchestrator talks to a route's MCP server: which tools it offers (their
    names and descriptions become evidence of the route) and whether it answers."""

    discover_tools: bool = True
    health: bool = True
    """Ping the server (MCP ``ping``); a server that stops answering makes its route
    unavailable, and requests for it fail open."""
    refresh_seconds: float = Field(default=300.0, ge=10.0, le=86_400.0)
    """Tool lists are read again this often, and at once on ``tools/list_changed``."""
    ping_seconds: float = Field(default=5.0, ge=1.0, le=300.0)
    timeout_ms: int = Field(default=5_000, ge=100, le=60_000)
    """For each exchange with the server (connect, initialize, a tools/list page, ping)."""
    failures_to_unavailable: int = Field(default=2, ge=1, le=10)
    """Consecutive failed pings or connection attempts that make the route unavailable."""
    max_tools: int = Field(default=128, ge=1, le=512)
    """Tools kept from one server (the first ones listed); more are reported and dropped."""
    max_text_bytes: int = Field(default=32_768, ge=1_024, le=262_144)
    """UTF-8 bytes of tool text (names, titles, descriptions, parameters) kept from one
    server; a tools/list larger than this is cut, reported, and never fails the route."""
    fallback_route: RouteName | None = None
    """Where requests for this route go while its server is unavailable (default: the
    escalation route)."""
    credentials_file: str | None = Field(
        default=None, description="Mounted Secret key holding the server's bearer token."
    )


MAX_TOOL_NAME_CHARS = 128
MAX_TOOL_TITLE_CHARS = 128
MAX_TOOL_DESCRIPTION_CHARS = 1_024
MAX_TOOL_PARAMETERS = 16
MAX_TOOL_PARAMETER_CHARS = 160


class ToolEvidence(ContractModel):
    """What an MCP server said one of its tools does, cleaned and cut to the caps above.
    The orchestrator fills these in from ``tools/list``; they are data for the layers,
    never instructions."""

    name: str = Field(min_length=1, max_length=MAX_TOOL_NAME_CHARS)
    title: str = Field(default="", max_length=MAX_TOOL_TITLE_CHARS)
    description: str = Field(default="", max_length=MAX_TOOL_DESCRIPTION_CHARS)
    parameters: tuple[Annotated[str, Field(max_length=MAX_TOOL_PARAMETER_CHARS)], ...] = Field(
        default=(), max_length=MAX_TOOL_PARAMETERS
    )
    """``name: description`` of each input-schema property, in the schema's order."""


class RouteConfig(ContractModel):
    """One route the cascade may choose: an MCP server and what it is for."""

    name: RouteName
    description: str = ""
    examples: tuple[str, ...] = ()
    target: str | None = Field(
        default=None, description="URL requests for this route are dispatched to."
    )
    thresholds: dict[str, Probability] = Field(
        default_factory=dict,
        description="Per-layer confidence threshold overrides for this route, by layer name.",
    )
    source: str = Field(default="", description="namespace/name of the RouteTable it came from.")
    mcp: McpConfig | None = Field(
        default=None, description="The target is an MCP server: discover its tools, ping it."
    )
    tools: tuple[ToolEvidence, ...] = Field(
        default=(),
        description="Tools discovered from the target (filled in by the orchestrator at run "
        "time from tools/list; a rendered config carries none).",
    )


class EscalationConfig(ContractModel):
    """The L3 route: a remote reasoning endpoint for multi-step or ambiguous work."""

    route: RouteName = "cortex"
    description: str = ""
    target: str | None = None
    credentials_file: str | None = Field(
        default=None,
        description="File holding the bearer credential (a mounted Secret key); never the value.",
    )
    timeout_ms: int = Field(default=30000, ge=1)


class ModelRef(ContractModel):
    """A model file or folder a layer serves, and where the models volume holds it."""

    uri: str
    sha256: Sha256 | None = None
    path: str = Field(description="Path relative to the models directory.")


HeadMode = Literal["head", "encoder"]
"""What L0's training Job makes: ``head``, the encoder fine-tuned with a linear head over
the routes (``runtime/finetune.py``; tables of a few hundred examples or more); ``encoder``,
the encoder alone fine-tuned on every example and description phrase, serving L0's
nearest-example vote (``runtime/encoder_tuning.py``; small hand-written tables)."""


GenericSource = Literal["hwu64", "clinc150"]
"""A public corpus of generic assistant requests packaged with router-mesh
(``runtime/generic_requests.py``): HWU64 (CC BY 4.0) or CLINC150 (CC BY 3.0), train rows."""

GENERIC_REQUESTS_VERSION = "dc56b8325d3ebfcf"
"""``generic_requests.version()`` of the packaged corpus and its draw, here so that the
operator keys an artifact by it without reading the corpus (tests check it against the
file: change the corpus, ``ROWS`` or ``NEAR`` and this with them)."""


class HeadConfig(ContractModel):
    """A routing head fine-tuned from the route examples (embedding layers; see
    ``runtime/finetune.py``). The training Job (or local mode) writes the artifact to
    ``path``; until a finished artifact for the running examples is there, the layer
    serves with its base ``model`` (training never blocks routing)."""

    mode: HeadMode = Field(default="head", description="What the Job makes (HeadMode).")

    base: ModelRef = Field(
        description="The fp32 sentence encoder to fine-tune: a folder with config.json, "
        "model.safetensors and tokenizer.json."
    )
    path: str = Field(description="Artifact folder relative to the models directory.")
    epochs: int = Field(
        default=2,
        ge=1,
        le=10,
        description="The operator and local mode render 2 for a head, 4 for a tuned encoder "
        "unless the RouterMesh sets it (operator/api.head_epochs); this default is a head's.",
    )
    seed: int = Field(default=0, ge=0)
    max_tokens: int = Field(default=48, ge=8, le=256)
    generic_requests: tuple[GenericSource, ...] = Field(
        default=(),
        description="Mode encoder: packaged corpora of generic requests the encoder learns as "
        "one more class, so that requests for none of the routes sit apart from them "
        "(runtime/generic_requests.py); their clauses are then judged by route alone. Empty: "
        "the table alone.",
    )
    threshold: Probability | None = Field(
        default=None,
        description="The layer's threshold while the head serves (none: the layer's). The "
        "base encoder and the head give confidences on different scales: a threshold fitted "
        "for one is wrong for the other.",
    )
    calibration: tuple[float, float] | None = Field(
        default=None,
        description="Platt scaling (slope, intercept) of the head's confidence while it "
        "serves (none: the layer's calibration).",
    )

    @model_validator(mode="after")
    def _generic_requests(self) -> HeadConfig:
        if self.generic_requests and self.mode != "encoder":
            raise ValueError("generic_requests are learned by a tuned encoder only (mode encoder)")
        if len(set(self.generic_requests)) != len(self.generic_requests):
            raise ValueError(f"generic_requests names a corpus twice: {self.generic_requests}")
        return self


class AdaptiveConfig(ContractModel):
    """Online threshold adaptation from feedback outcomes (``runtime/adaptive.py``)."""

    target: Probability = Field(
        default=0.97, description="Accuracy the layer's decisions must keep."
    )
    min_samples: int = Field(default=50, ge=10, le=100_000)
    max_step: float = Field(default=0.05, ge=0.001, le=0.5)
    floor: Probability = 0.5
    ceiling: Probability = 0.99
    tolerance: float = Field(
        default=0.02, ge=0.0, le=0.5, description="Accuracy drop below target that rolls back."
    )

    @model_validator(mode="after")
    def _ordered(self) -> AdaptiveConfig:
        if self.floor > self.ceiling:
            raise ValueError(f"adaptive floor {self.floor} is above its ceiling {self.ceiling}")
        return self


class LayerConfig(ContractModel):
    """One classification layer of the cascade.

    ``kind`` makes layers pluggable: ``generative`` (an OpenAI-compatible completions
    server scored by label log-probabilities, engine ``llamacpp`` or ``vllm``) and
    ``embedding`` (nearest RouteTable examples in a sentence-embedding space, run in
    the orchestrator by ``onnx``; no model server, so no ``url``).
    """

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]*$")]
    kind: Literal["generative", "embedding"] = "generative"
    enabled: bool = True
    engine: Literal["llamacpp", "vllm", "onnx"]
    model: ModelRef
    url: str = Field(
        default="",
        description="Base URL of the layer's model server (OpenAI-compatible); generative only.",
    )
    threshold: Probability
    timeout_ms: int = Field(ge=1)
    k: int = Field(default=10, ge=1, le=100, description="Neighbours that vote (embedding).")
    calibration: tuple[float, float] | None = Field(
        default=None,
        description="Platt scaling (slope, intercept) of the layer's confidence p: "
        "sigmoid(slope * logit(p) + intercept), applied before the threshold.",
    )
    agree_with: str | None = Field(
        default=None,
        description="An earlier layer whose top route (at any confidence) this layer must "
        "match to decide; where that layer had no route, this one decides alone.",
    )
    head: HeadConfig | None = Field(
        default=None, description="A routing head trained from the examples (embedding only)."
    )
    adaptive: AdaptiveConfig | None = Field(
        default=None, description="Move the threshold by feedback outcomes (none: fixed)."
    )
    multi_step_threshold: Probability | None = Field(
        default=None,
        description="Embedding layers: escalate a message as multi-step when two of its "
        "clauses go to different routes with at least this confidence (none: off).",
    )
    multi_step_joined_threshold: Probability | None = Field(
        default=None,
        description="Embedding layers: the confidence a clause that a joining word ties to "
        "the message ('..., after that reboot the switch') needs when its route is among the "
        "message's three best and another clause reaches multi_step_threshold (none: "
        "multi_step_threshold for every clause).",
    )
    max_queue_ms: int | None = Field(
        default=None,
        ge=1,
        description="Embedding layers: skip the layer at once (reason overload) when the "
        "encoder's backlog would make the message wait longer than this (none: never).",
    )
    candidates: int = Field(
        default=3,
        ge=1,
        le=MAX_CANDIDATES,
        description="Generative layers: routes judged per message (the earlier layer's best "
        "ranked), besides 'none' and 'several'.",
    )
    context_tokens: int = Field(
        default=4096,
        ge=512,
        le=131_072,
        description="Generative layers: the model server's context per request; the longest "
        "prompt the layer can send must fit.",
    )
    max_in_flight: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Generative layers: requests the orchestrator has in flight to the model "
        "server at once, its slots (serve-model's --parallel defaults to it); a request that "
        "finds them all busy skips the layer (reason overload) instead of queueing.",
    )

    def calibrated(self, confidence: float, *, head: bool = False) -> float:
        """``confidence`` through the layer's Platt scaling (the trained head's own when
        ``head``: the head answered, and one is configured)."""
        calibration = self.calibration
        if head and self.head is not None and self.head.calibration is not None:
            calibration = self.head.calibration
        if calibration is None:
            return confidence
        slope, intercept = calibration
        p = min(max(confidence, 1e-6), 1 - 1e-6)
        z = slope * math.log(p / (1 - p)) + intercept
        return 1 / (1 + math.exp(-max(min(z, 40.0), -40.0)))

    @model_validator(mode="after")
    def _kind_fits(self) -> LayerConfig:
        if self.kind == "embedding" and self.engine != "onnx":
            raise ValueError(f"layer {self.name}: an embedding layer runs on engine 'onnx'")
        if self.head is not None and self.kind != "embedding":
            raise ValueError(f"layer {self.name}: only an embedding layer has a trained head")
        if self.multi_step_threshold is not None and self.kind != "embedding":
            raise ValueError(f"layer {self.name}: only an embedding layer detects multi-step")
        joined = self.multi_step_joined_threshold
        if joined is not None and (
            self.multi_step_threshold is None or joined > self.multi_step_threshold
        ):
            raise ValueError(
                f"layer {self.name}: multi_step_joined_threshold ({joined}) needs "
                "multi_step_threshold and may not exceed it"
            )
        if self.kind == "generative":
            if self.engine == "onnx":
                raise ValueError(f"layer {self.name}: a generative layer needs llamacpp or vllm")
            if not self.url:
                raise ValueError(f"layer {self.name}: a generative layer needs its server url")
            needed = judge_prompt_bound(self.candidates)
            if needed > self.context_tokens:
                raise ValueError(
                    f"layer {self.name}: a prompt with {self.candidates} candidates can take up "
                    f"to {needed} tokens, more than the context of {self.context_tokens}; "
                    "lower candidates or raise contextTokens"
                )
        return self


class CacheConfig(ContractModel):
    """Decision cache. Without Redis, an in-process LRU."""

    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    redis_url_file: str | None = Field(
        default=None, description="File holding the Redis URL (a mounted Secret key)."
    )
    ttl_seconds: int = Field(default=3600, ge=1)
    failure_ttl_seconds: int = Field(
        default=5,
        ge=0,
        le=3600,
        description="Lifetime of an escalation decided while a layer failed (0: never "
        "cached): short, so a recovered layer is asked again soon, and long enough that "
        "repeats do not pile onto an overloaded or failing layer.",
    )
    max_entries: int = Field(default=10000, ge=1)

    @model_validator(mode="after")
    def _redis_needs_an_address(self) -> CacheConfig:
        if self.backend == "redis" and not (self.redis_url or self.redis_url_file):
            raise ValueError("cache backend 'redis' needs redis_url or redis_url_file")
        return self


DEFAULT_MAX_MESSAGE_CHARS = 32_768
"""Longest message the API accepts by default (the layers read its first 2,000 characters)."""

MAX_MESSAGE_CHARS_LIMIT = 1_048_576
"""Highest ``max_message_chars`` a config may set: the body cap follows it (4 bytes a
character), and a larger body is never buffered."""


class ApiConfig(ContractModel):
    """The orchestrator's HTTP API: who may call it and how much it reads.

    Applied at serve time (never part of ``route_table_version``): a new token file or
    size limit reloads live without touching the decision cache.
    """

    token_file: str | None = Field(
        default=None,
        description="File holding the bearer token that /v1/* requests must present (a "
        "mounted Secret key); none: no authentication. Never the value.",
    )
    max_message_chars: int = Field(
        default=DEFAULT_MAX_MESSAGE_CHARS,
        ge=1,
        le=MAX_MESSAGE_CHARS_LIMIT,
        description="Longest message accepted; longer ones get 413.",
    )
    learn_from_tool_calls: bool = Field(
        default=False,
        description="Feed back the route whose tools an agent called through /mcp after "
        "the router escalated its request with candidate tools (runtime/mcp_feedback.py).",
    )


class ExamplesSource(ContractModel):
    """A labelled example set ("text"/"route" JSONL) referenced by a RouteTable."""

    uri: str
    sha256: Sha256 | None = None
    path: str = Field(description="Path relative to the models directory once fetched.")
    source: str = Field(default="", description="namespace/name of the RouteTable.")


class MeshRef(ContractModel):
    name: str
    namespace: str = ""


class RouterConfig(ContractModel):
    """Everything the orchestrator needs, rendered from a RouterMesh and its RouteTables."""

    schema_version: Literal[1] = SCHEMA_VERSION
    mesh: MeshRef
    routes: tuple[RouteConfig, ...] = Field(min_length=1)
    escalation: EscalationConfig
    layers: tuple[LayerConfig, ...]
    cache: CacheConfig = CacheConfig()
    api: ApiConfig = ApiConfig()
    examples_from: tuple[ExamplesSource, ...] = ()
    route_table_version: str = ""
    config_hash: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> RouterConfig:
        names = [r.name for r in self.routes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate route names: {', '.join(duplicates)}")
        if self.escalation.route in names:
            raise ValueError(
                f"route {self.escalation.route!r} is the escalation route and cannot be a "
                "RouteTable route"
            )
        labels = [*names, self.escalation.route]
        if any(layer.enabled and layer.kind == "generative" for layer in self.layers):
            reserved = sorted(set(labels) & set(JUDGE_LABELS))
            if reserved:
                raise ValueError(
                    f"route name {reserved[0]!r} is an answer of the generative layers "
                    f"({', '.join(JUDGE_LABELS)}); rename the route"
                )
            labels += JUDGE_LABELS
        for label in labels:
            longer = sorted(other for other in labels if other != label and other.startswith(label))
            if longer:
                raise ValueError(
                    f"route name {label!r} begins {', '.join(map(repr, longer))}: the layers "
                    "tell routes apart by the first token of their names; rename one"
                )
        layer_names = [layer.name for layer in self.layers]
        if len(set(layer_names)) != len(layer_names):
            raise ValueError(f"duplicate layer names: {layer_names}")
        for position, layer in enumerate(self.layers):
            if layer.agree_with is not None and layer.agree_with not in layer_names[:position]:
                raise ValueError(
                    f"layer {layer.name}: agree_with {layer.agree_with!r} is not an earlier layer"
                )
        for route in self.routes:
            fallback = route.mcp.fallback_route if route.mcp else None
            if fallback is not None and (fallback == route.name or fallback not in labels):
                raise ValueError(
                    f"route {route.name!r}: fallbackRoute {fallback!r} must be another route "
                    "of the mesh or its escalation route"
                )
            unknown = set(route.thresholds) - set(layer_names)
            if unknown:
                raise ValueError(
                    f"route {route.name!r} overrides thresholds of unknown layers: "
                    f"{sorted(unknown)}"
                )
        return self

    @property
    def route_names(self) -> tuple[str, ...]:
        """Candidate labels of every layer: the routes, then the escalation route."""
        return (*(r.name for r in self.routes), self.escalation.route)

    def threshold_for(
        self, layer: str, route: str, adapted: float | None = None, *, head: bool = False
    ) -> float:
        """The confidence a ``layer`` needs to choose ``route``: the route's own threshold
        first (an explicit choice), then, when the layer answered with its trained head
        (``head``), the head's threshold, then the layer's adapted one, then the layer's.
        Feedback adapts the threshold of the layer, not a head's own."""
        for candidate in self.routes:
            if candidate.name == route and layer in candidate.thresholds:
                return candidate.thresholds[layer]
        for configured in self.layers:
            if configured.name == layer:
                trained = configured.head
                if head and trained is not None and trained.threshold is not None:
                    return trained.threshold
                return configured.threshold if adapted is None else adapted
        raise KeyError(f"unknown layer {layer!r}")

    def sealed(self) -> RouterConfig:
        """This config with both digests computed from its content."""
        body = self.model_copy(update={"route_table_version": "", "config_hash": ""})
        version = _digest(_decision_inputs(body))
        with_version = body.model_copy(update={"route_table_version": version})
        return with_version.model_copy(update={"config_hash": _digest(_content(with_version))})

    def with_tools(self, tools: dict[str, tuple[ToolEvidence, ...]]) -> RouterConfig:
        """This config with the tools discovered per route as route evidence: a new
        ``route_table_version`` (the decisions it caches differ), the same
        ``config_hash`` (the operator's config is what runs)."""
        routes = tuple(
            route.model_copy(update={"tools": tools.get(route.name, ())}) for route in self.routes
        )
        body = self.model_copy(update={"routes": routes})
        return body.model_copy(update={"route_table_version": _digest(_decision_inputs(body))})

    def verify_digests(self) -> None:
        """Raise ``ValueError`` if the digests do not match the content (a hand-edited file)."""
        expected = self.sealed()
        if (self.config_hash, self.route_table_version) != (
            expected.config_hash,
            expected.route_table_version,
        ):
            raise ValueError(
                "config digests do not match its content: re-render it instead of editing it"
            )

    def to_json(self) -> str:
        """The canonical file content (stable key order, so equal configs are equal bytes)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> RouterConfig:
        return cls.model_validate_json(text)

    @classmethod
    def load(cls, directory: str | Path) -> RouterConfig:
        """Load from a mounted config directory (follows the ConfigMap's ``..data`` link)."""
        return cls.from_json((Path(directory) / CONFIG_FILENAME).read_bytes())


def _content(config: RouterConfig) -> dict[str, Any]:
    return config.model_dump(mode="json", exclude={"config_hash"})


def _decision_inputs(config: RouterConfig) -> dict[str, Any]:
    return {
        "routes": [
            r.model_dump(
                mode="json", include={"name", "description", "examples", "thresholds", "tools"}
            )
            for r in config.routes
        ],
        "escalation": config.escalation.model_dump(mode="json", include={"route", "description"}),
        "examples_from": [
            e.model_dump(mode="json", include={"uri", "sha256"}) for e in config.examples_from
        ],
        "layers": [
            layer.model_dump(
                mode="json",
                include={
                    "name",
                    "kind",
                    "enabled",
                    "engine",
                    "model",
                    "threshold",
                    "k",
                    "calibration",
                    "agree_with",
                    "head",
                    "adaptive",
                    "multi_step_threshold",
                    "multi_step_joined_threshold",
                    "candidates",
                },
            )
            for layer in config.layers
        ],
    }


def _digest(data: dict[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def model_dir_name(uri: str) -> str:
    """Folder under the models directory for a model source URI.

    Readable (the file name) and collision-free (a short digest of the full URI),
    so two layers with the same file name from different sources never clash,
    and the fetch Job, the model servers and local mode agree on the path.
    """
    # The readable part never takes a query or user info (presigned URLs carry secrets).
    path = uri.split("?", 1)[0].split("#", 1)[0]
    tail = path.rstrip("/").rsplit("/", 1)[-1] or "model"
    readable = _UNSAFE.sub("-", tail).strip("-.")[:80] or "model"
    return f"{readable}-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"


def examples_file_name(source: str, uri: str) -> str:
    """File name, under ``<models>/examples/``, of a RouteTable's ``examplesFrom`` set."""
    readable = _UNSAFE.sub("-", source).strip("-.")[:80] or "examples"
    return f"examples/{readable}-{hashlib.sha256(uri.encode()).hexdigest()[:12]}.jsonl"


def route_name_from_label(label: str) -> str:
    """A dataset or log label as a route name (a DNS label): ``credit_cards`` -> ``credit-cards``.

    ``examplesFrom`` rows, benchmark datasets and ``router-mesh routetable from-jsonl``
    all map labels through this one function, so they agree on route names.
    """
    name = re.sub(r"[^a-z0-9]+", "-", label.strip().lower()).strip("-")
    return name[:63].rstrip("-")
