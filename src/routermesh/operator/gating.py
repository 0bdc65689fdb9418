"""Which model set the pods run now: the spec's once its download Job succeeded, else the
last downloaded one with every other change of the spec applied. Pure: the caller reads
the Job, the running ConfigMap and the Deployment.

Where the last downloaded set is remembered, in order: the running ConfigMap, then the
Deployment's annotation. Neither readable while a Deployment runs (one written by an
older operator): the Deployment, its HPA and the ConfigMap are held as they are, never
pruned, until the download succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from routermesh.operator import builders as b
from routermesh.operator.conditions import JobPhase
from routermesh.operator.modelset import ANNOTATION, ModelSet, with_model_set
from routermesh.runtime.contract import config as rc

Decision = Literal["downloaded", "waiting", "waiting_on_deployment", "holding", "first_download"]


@dataclass(frozen=True)
class Gate:
    decision: Decision
    active: rc.RouterConfig | None
    """The config the pods are to run; None: no ConfigMap nor Deployment to write now."""
    models_active: bool
    """The spec's model set is on the volume (the pods may run it)."""

    @property
    def hold(self) -> bool:
        """Keep the running Deployment, HPA and ConfigMap untouched (neither applied nor
        pruned): the model set they run is unknown."""
        return self.decision == "holding"


def deployed_models(deployment: dict[str, Any] | None) -> tuple[str | None, ModelSet | None]:
    """The digest of the model set the Deployment's pod template runs, and the set itself
    as the Deployment carries it (each None when absent or unreadable)."""
    if deployment is None:
        return None, None
    meta = deployment.get("metadata") or {}
    template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    digest = (template.get("annotations") or {}).get(b.MODELS_ANNOTATION)
    carried = ModelSet.from_annotation((meta.get("annotations") or {}).get(ANNOTATION))
    return digest if isinstance(digest, str) else None, carried


def gate_models(
    config: rc.RouterConfig,
    *,
    job: JobPhase,
    running: rc.RouterConfig | None,
    deployment: dict[str, Any] | None,
) -> Gate:
    """``config`` (freshly rendered) gated on its download Job's phase ``job``; ``running``
    is the running ConfigMap's config (None when absent or unreadable)."""
    digest = b.models_hash(config)
    deployed_digest, carried = deployed_models(deployment)
    if (
        job == "succeeded"
        or (running is not None and b.models_hash(running) == digest)
        or deployed_digest == digest
    ):
        return Gate("downloaded", config, True)
    decision: Decision
    if running is not None:
        decision, source = "waiting", ModelSet.of(running)
    elif carried is not None:
        decision, source = "waiting_on_deployment", carried
    elif deployment is not None:
        return Gate("holding", None, False)
    else:
        return Gate("first_download", None, False)
    active = with_model_set(config, source)
    if b.models_hash(active) == digest:
        # Only layers turned off: every model the spec needs is already there.
        return Gate("downloaded", active, True)
    return Gate(decision, active, False)
