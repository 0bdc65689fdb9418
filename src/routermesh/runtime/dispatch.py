"""Dispatch: forward a routed request to its route's target.

The body is forwarded unchanged (with its content type) to the target URL of the
chosen route, or to the escalation endpoint with its bearer credential read from
the mounted Secret file at call time (so a rotated Secret is used without a
restart). Failures never raise: they come back as a :class:`DispatchError` naming
the target, which the API turns into a 502.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from routermesh.runtime.cascade import Decision
from routermesh.runtime.contract.config import RouterConfig
from routermesh.runtime.router import ConfigError, read_secret_file

ROUTE_TIMEOUT_SECONDS = 30.0
FORWARDED_HEADERS = ("content-type", "accept", "accept-encoding", "user-agent")
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
    }
)


@dataclass(frozen=True)
class DispatchError:
    target: str | None
    error: str


def decision_headers(decision: Decision) -> dict[str, str]:
    """The decision in ``X-Router-*`` headers, on every dispatched answer."""
    headers = {
        "X-Router-Route": decision.route,
        "X-Router-Layer": decision.layer,
        "X-Router-Confidence": f"{decision.confidence:.4f}",
        "X-Router-Config-Hash": decision.config_hash,
    }
    if decision.escalation_reason is not None:
        headers["X-Router-Escalation-Reason"] = decision.escalation_reason
    if decision.plan:
        headers["X-Router-Plan"] = ",".join(decision.plan)
    if decision.unavailable is not None:
        headers["X-Router-Unavailable"] = decision.unavailable
    return headers


def target_for(config: RouterConfig, route: str) -> str | None:
    if route == config.escalation.route:
        return config.escalation.target
    for candidate in config.routes:
        if candidate.name == route:
            return candidate.target
    return None


async def forward(
    client: httpx.AsyncClient,
    config: RouterConfig,
    route: str,
    body: bytes,
    headers: dict[str, str],
) -> httpx.Response | DispatchError:
    target = target_for(config, route)
    if target is None:
        return DispatchError(None, f"route {route!r} has no target configured")
    outgoing = {k: v for k, v in headers.items() if k.lower() in FORWARDED_HEADERS}
    timeout = ROUTE_TIMEOUT_SECONDS
    if route == config.escalation.route:
        timeout = config.escalation.timeout_ms / 1000
        if config.escalation.credentials_file:
            try:
                token = read_secret_file(config.escalation.credentials_file)
            except ConfigError as error:
                return DispatchError(target, str(error))
            outgoing["authorization"] = f"Bearer {token}"
    try:
        return await client.post(target, content=body, headers=outgoing, timeout=timeout)
    except httpx.TimeoutException:
        return DispatchError(target, f"target {target} did not answer within {timeout:g} s")
    except httpx.HTTPError as error:
        return DispatchError(target, f"target {target} is unreachable: {type(error).__name__}")


def response_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
