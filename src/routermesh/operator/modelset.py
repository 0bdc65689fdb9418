"""The model set a config runs with: per layer, whether it runs, its model and its trained
head (base encoder and artifact), and the example sets.

A new model set reaches the pods only once its download Job has succeeded; until then
the pods keep the last downloaded set with every other change of the spec applied
(:func:`with_model_set`). The running ConfigMap remembers that set, and the Deployment
carries it too (annotation :data:`ANNOTATION`), so the operator never loses it when the
ConfigMap is gone or unreadable.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from routermesh.runtime.contract import config as rc

ANNOTATION = "routermesh.io/model-set"
"""On the Deployment (not its pod template: writing it never restarts a pod)."""


class LayerModels(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool
    model: rc.ModelRef
    head: rc.HeadConfig | None = None


class ModelSet(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    layers: dict[str, LayerModels]
    examples_from: tuple[rc.ExamplesSource, ...] = ()

    @classmethod
    def of(cls, config: rc.RouterConfig) -> ModelSet:
        return cls(
            layers={
                layer.name: LayerModels(enabled=layer.enabled, model=layer.model, head=layer.head)
                for layer in config.layers
            },
            examples_from=config.examples_from,
        )

    def to_annotation(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_annotation(cls, text: str | None) -> ModelSet | None:
        """The set an annotation holds; None when absent or unreadable (an older operator
        wrote none, or someone edited it)."""
        if not text:
            return None
        try:
            return cls.model_validate_json(text)
        except ValidationError:
            return None


def with_model_set(config: rc.RouterConfig, models: ModelSet) -> rc.RouterConfig:
    """``config`` with the downloaded ``models``: every other change applies now.

    A layer runs only when it runs in both: turning a layer on waits for its model like a
    model change (its server would not find the model), turning one off applies at once.
    A layer ``models`` does not know was never downloaded, so it stays off.
    """
    layers = []
    for layer in config.layers:
        source = models.layers.get(layer.name)
        if source is None:
            layers.append(layer.model_copy(update={"enabled": False}))
            continue
        layers.append(
            layer.model_copy(
                update={
                    "enabled": layer.enabled and source.enabled,
                    "model": source.model,
                    # A head's base encoder is a model too, and its artifact key follows
                    # the examples.
                    "head": source.head,
                }
            )
        )
    update = {"layers": tuple(layers), "examples_from": models.examples_from}
    return config.model_copy(update=update).sealed()
