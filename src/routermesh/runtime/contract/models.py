"""The model set: what the model-download Job (and local mode) fetches for a config.

The operator computes it from the rendered config, hands it to the Job as
``--items-json``, and names the Job after its digest; the runtime's downloader reads the
same items back. Pure data: no I/O here, so the operator's builders import no downloader.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from routermesh.runtime.contract.config import RouterConfig


class ModelSetError(ValueError):
    """An items list that is not a model set; the message says which entry and why."""


class FetchItem(BaseModel):
    """One thing to fetch onto the models volume."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str
    sha256: str | None
    path: str
    """Relative to the models directory."""
    kind: Literal["model", "examples"] = "model"
    """A model lands in the folder ``path``; an examples set is the file ``path``."""


_ITEMS = TypeAdapter(list[FetchItem])


def items_from_config(config: RouterConfig) -> list[FetchItem]:
    items = [
        FetchItem(uri=layer.model.uri, sha256=layer.model.sha256, path=layer.model.path)
        for layer in config.layers
        if layer.enabled
    ]
    # A trained head's base encoder is fetched with the models (the training Job reads it).
    items += [
        FetchItem(uri=layer.head.base.uri, sha256=layer.head.base.sha256, path=layer.head.base.path)
        for layer in config.layers
        if layer.enabled and layer.head is not None
    ]
    items += [
        FetchItem(uri=source.uri, sha256=source.sha256, path=source.path, kind="examples")
        for source in config.examples_from
    ]
    unique: dict[str, FetchItem] = {}
    for item in items:
        unique.setdefault(item.path, item)
    return list(unique.values())


def items_to_json(items: list[FetchItem]) -> str:
    """The compact form the model-download Job receives (``--items-json``); sorted keys, so
    the digest of a set never depends on field order."""
    return json.dumps([item.model_dump() for item in items], separators=(",", ":"), sort_keys=True)


def items_from_json(text: str) -> list[FetchItem]:
    try:
        return _ITEMS.validate_json(text)
    except ValidationError as error:
        raise ModelSetError(f"--items-json is not a list of fetch items: {error}") from error


def items_digest(items: list[FetchItem]) -> str:
    """Digest of a model set: a new set gets a new download Job."""
    return hashlib.sha256(items_to_json(items).encode()).hexdigest()
