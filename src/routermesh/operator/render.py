"""Render the runtime config from a RouterMesh and its RouteTables.

Pure: no Kubernetes client, no clock, no file access. The operator calls
:func:`render_config` for the ConfigMap; local mode calls the same function on
YAML files, so a mesh behaves the same on a laptop and in a cluster.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

from pydantic import ValidationError

from routermesh.operator.api import (
    Adaptive,
    Calibration,
    LabelSelector,
    McpTarget,
    RouterMesh,
    RouteTable,
    SecretKeyRef,
    Target,
    TrainedHead,
    describe_errors,
    head_epochs,
)
from routermesh.runtime.contract import config as rc


class RenderError(ValueError):
    """The mesh and its tables cannot form a valid config; the message says why."""


def label_selector_matches(selector: LabelSelector, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (an empty selector matches everything)."""
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.match_expressions or []:
        present = requirement.key in labels
        values = requirement.values or []
        if requirement.operator == "In" and labels.get(requirement.key) not in values:
            return False
        if requirement.operator == "NotIn" and present and labels[requirement.key] in values:
            return False
        if requirement.operator == "Exists" and not present:
            return False
        if requirement.operator == "DoesNotExist" and present:
            return False
    return True


def selects(mesh: RouterMesh, table: RouteTable) -> bool:
    """Whether ``mesh`` routes over ``table``: same namespace, and named or matching."""
    if (table.metadata.namespace or "") != (mesh.metadata.namespace or ""):
        return False
    selection = mesh.spec.route_tables
    if selection.names and table.metadata.name in selection.names:
        return True
    return selection.selector is not None and label_selector_matches(
        selection.selector, table.metadata.labels
    )


def selected_tables(mesh: RouterMesh, tables: Iterable[RouteTable]) -> list[RouteTable]:
    """The tables ``mesh`` selects, in a stable order (by name)."""
    return sorted((t for t in tables if selects(mesh, t)), key=lambda t: t.metadata.name)


def resolve_target(target: Target, default_namespace: str) -> str:
    """A route target as a URL; a Service reference becomes its cluster DNS name."""
    if target.url is not None:
        return target.url
    service = target.service
    if service is None:  # unreachable: Target enforces exactly one
        raise RenderError("target has neither url nor service")
    namespace = service.namespace or default_namespace or "default"
    return f"{service.scheme}://{service.name}.{namespace}.svc:{service.port}{service.path}"


def secret_file(use: str, ref: SecretKeyRef) -> str:
    """Where the pod mounts a Secret key for ``use`` (the builders mount it there)."""
    return f"{rc.SECRETS_DIR}/{use}/{ref.key}"


def _source(table: RouteTable) -> str:
    return f"{table.metadata.namespace or ''}/{table.metadata.name}".lstrip("/")


def _routes(tables: Sequence[RouteTable], escalation_route: str) -> list[rc.RouteConfig]:
    seen: dict[str, str] = {}
    routes = []
    for table in tables:
        for route in table.spec.routes:
            if route.name == escalation_route:
                raise RenderError(
                    f"RouteTable {_source(table)}: route {route.name!r} is the mesh's "
                    "escalation route; rename the route or spec.escalation.route"
                )
            if route.name in seen:
                raise RenderError(
                    f"route {route.name!r} is defined in RouteTables {seen[route.name]} and "
                    f"{_source(table)}; route names must be unique across a mesh"
                )
            seen[route.name] = _source(table)
            thresholds = route.thresholds.model_dump(exclude_none=True) if route.thresholds else {}
            routes.append(
                rc.RouteConfig(
                    name=route.name,
                    description=route.description,
                    examples=tuple(route.examples),
                    target=resolve_target(route.target, table.metadata.namespace or ""),
                    thresholds=thresholds,
                    source=_source(table),
                    mcp=_mcp(route.target.mcp),
                )
            )
    return routes


def _check_fallbacks(routes: Sequence[rc.RouteConfig], escalation_route: str) -> None:
    """A fallbackRoute must name another route of the mesh (from any of its tables) or the
    escalation route: said here with the table at fault (the contract refuses it too)."""
    names = {route.name for route in routes}
    for route in routes:
        fallback = route.mcp.fallback_route if route.mcp else None
        if fallback is None or (fallback != route.name and fallback in names | {escalation_route}):
            continue
        raise RenderError(
            f"RouteTable {route.source}: route {route.name!r}: target.mcp.fallbackRoute "
            f"{fallback!r} must name another route of the mesh (in any of its RouteTables) "
            f"or its escalation route {escalation_route!r}"
        )


def _mcp(mcp: McpTarget | None) -> rc.McpConfig | None:
    if mcp is None:
        return None
    ref = mcp.credentials_secret_ref
    return rc.McpConfig(
        discover_tools=mcp.discover_tools,
        health=mcp.health_check,
        refresh_seconds=mcp.refresh_seconds,
        ping_seconds=mcp.ping_seconds,
        timeout_ms=mcp.timeout_ms,
        failures_to_unavailable=mcp.failures_to_unavailable,
        max_tools=mcp.max_tools,
        max_text_bytes=mcp.max_text_bytes,
        fallback_route=mcp.fallback_route,
        credentials_file=f"{rc.MCP_SECRETS_DIR}/{ref.name}/{ref.key}" if ref else None,
    )


def _platt(calibration: Calibration | None) -> tuple[float, float] | None:
    return (calibration.slope, calibration.intercept) if calibration else None


def _adaptive(adaptive: Adaptive) -> rc.AdaptiveConfig | None:
    if not adaptive.enabled:
        return None
    return rc.AdaptiveConfig(
        target=adaptive.target,
        min_samples=adaptive.min_samples,
        max_step=adaptive.max_step,
        floor=adaptive.floor,
        ceiling=adaptive.ceiling,
        tolerance=adaptive.tolerance,
    )


def render_config(mesh: RouterMesh, tables: Iterable[RouteTable]) -> rc.RouterConfig:
    """The sealed runtime config of ``mesh`` over the tables it selects among ``tables``.

    Raises :class:`RenderError` when no table is selected or routes conflict.
    """
    chosen = selected_tables(mesh, tables)
    if not chosen:
        raise RenderError(
            "no RouteTable selected by spec.routeTables in namespace "
            f"{mesh.metadata.namespace or 'default'!r}"
        )
    spec = mesh.spec
    namespace = mesh.metadata.namespace or ""
    escalation = spec.escalation
    l0 = spec.layers.l0
    layers = [
        rc.LayerConfig(
            name="l0",
            kind="embedding",
            enabled=l0.enabled,
            engine=l0.engine,
            model=rc.ModelRef(
                uri=l0.model.uri, sha256=l0.model.sha256, path=rc.model_dir_name(l0.model.uri)
            ),
            threshold=l0.threshold,
            timeout_ms=l0.timeout_ms,
            k=l0.k,
            calibration=_platt(l0.calibration),
            adaptive=_adaptive(l0.adaptive),
            multi_step_threshold=l0.multi_step.threshold if l0.multi_step.enabled else None,
            multi_step_joined_threshold=(
                min(l0.multi_step.joined_threshold, l0.multi_step.threshold)
                if l0.multi_step.enabled
                else None
            ),
            max_queue_ms=l0.max_queue_ms,
        )
    ]
    for name, layer in (("l1", spec.layers.l1), ("l2", spec.layers.l2)):
        layers.append(
            rc.LayerConfig(
                name=name,
                enabled=layer.enabled,
                engine=layer.engine,
                model=rc.ModelRef(
                    uri=layer.model.uri,
                    sha256=layer.model.sha256,
                    path=rc.model_dir_name(layer.model.uri),
                ),
                url=f"http://127.0.0.1:{rc.LAYER_PORTS[name]}",
                threshold=layer.threshold,
                timeout_ms=layer.timeout_ms,
                calibration=_platt(layer.calibration),
                agree_with="l0" if spec.layers.l0.enabled and layer.agree_with_l0 else None,
                adaptive=_adaptive(layer.adaptive),
                candidates=layer.candidates,
                context_tokens=layer.context_tokens,
                max_in_flight=layer.max_in_flight,
            )
        )
    redis = spec.cache.redis
    cache = rc.CacheConfig(
        backend="redis" if redis else "memory",
        redis_url=redis.url if redis else None,
        redis_url_file=(
            secret_file("redis", redis.url_secret_ref) if redis and redis.url_secret_ref else None
        ),
        ttl_seconds=spec.cache.ttl_seconds,
        failure_ttl_seconds=spec.cache.failure_ttl_seconds,
        max_entries=spec.cache.max_entries,
    )
    examples_from = tuple(
        rc.ExamplesSource(
            uri=t.spec.examples_from.uri,
            sha256=t.spec.examples_from.sha256,
            path=rc.examples_file_name(_source(t), t.spec.examples_from.uri),
            source=_source(t),
        )
        for t in chosen
        if t.spec.examples_from is not None
    )
    try:
        routes = tuple(_routes(chosen, escalation.route))
        _check_fallbacks(routes, escalation.route)
        config = rc.RouterConfig(
            mesh=rc.MeshRef(name=mesh.metadata.name, namespace=namespace),
            routes=routes,
            escalation=rc.EscalationConfig(
                route=escalation.route,
                description=escalation.description,
                target=(
                    resolve_target(escalation.target, namespace) if escalation.target else None
                ),
                credentials_file=(
                    secret_file("escalation", escalation.credentials_secret_ref)
                    if escalation.credentials_secret_ref
                    else None
                ),
                timeout_ms=escalation.timeout_ms,
            ),
            layers=tuple(layers),
            cache=cache,
            api=rc.ApiConfig(
                token_file=(
                    secret_file("api", spec.api.token_secret_ref)
                    if spec.api.token_secret_ref
                    else None
                ),
                max_message_chars=spec.api.max_message_chars,
                learn_from_tool_calls=spec.api.learn_from_tool_calls,
            ),
            examples_from=examples_from,
        )
    except ValidationError as error:
        # The runtime contract's own checks (a fallbackRoute that names no route of the
        # mesh, ...): one line per problem, without pydantic's dump of the whole input.
        raise RenderError("; ".join(describe_errors(error))) from None
    except ValueError as error:
        raise RenderError(str(error)) from error
    if l0.head.enabled:
        config = with_head(config, l0.head)
    return config.sealed()


def head_key(config: rc.RouterConfig, head: TrainedHead) -> str:
    """Key of what a trained head learns from: the examples (inline, and the example sets by
    source), the route and escalation names and the training settings. New key, new
    artifact folder and Job; the same inputs always give the same key."""
    inputs: dict[str, object] = {
        "routes": [[r.name, list(r.examples)] for r in config.routes],
        "escalation": config.escalation.route,
        "examples_from": [[e.uri, e.sha256] for e in config.examples_from],
        "base": [head.base.uri, head.base.sha256],
        "epochs": head_epochs(head),
        "seed": head.seed,
    }
    if head.mode == "encoder":
        # A tuned encoder learns the descriptions too (a head's keys stay as they were).
        inputs["mode"] = head.mode
        inputs["descriptions"] = [[r.name, r.description] for r in config.routes]
        if head.generic_requests:
            # ... and the generic requests, the corpus and its draw (an encoder tuned
            # without them keeps its key; their order changes nothing).
            inputs["generic_requests"] = sorted(head.generic_requests)
            inputs["generic_version"] = rc.GENERIC_REQUESTS_VERSION
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def with_head(config: rc.RouterConfig, head: TrainedHead) -> rc.RouterConfig:
    """``config`` with L0's trained head, its artifact under ``heads/<key>``."""
    trained = rc.HeadConfig(
        base=rc.ModelRef(
            uri=head.base.uri, sha256=head.base.sha256, path=rc.model_dir_name(head.base.uri)
        ),
        path=f"{rc.HEADS_DIR}/{head_key(config, head)}",
        mode=head.mode,
        epochs=head_epochs(head),
        seed=head.seed,
        generic_requests=tuple(sorted(head.generic_requests)),
        threshold=head.threshold,
        calibration=_platt(head.calibration),
    )
    layers = tuple(
        layer.model_copy(update={"head": trained}) if layer.name == "l0" else layer
        for layer in config.layers
    )
    return config.model_copy(update={"layers": layers})
