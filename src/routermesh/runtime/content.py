"""What decisions depend on beyond the config's text: the content of unpinned sources.

``route_table_version`` hashes each model's and example set's URI and sha256. A source
without a sha256 pin can change its content under the same URI (a moving branch fetched
again, an edited file), and the version would stay the same: cached decisions, shared
through Redis by every replica and across restarts, would outlive the content they were
decided on. :func:`content_version` digests what is on the models volume for each
unpinned source when a config is loaded, and the cascade adds it to its cache keys.
A pinned source needs nothing more: the fetch verified its content against the pin.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from routermesh.runtime.contract.config import RouterConfig
from routermesh.runtime.fetch import MARKER, read_marker, sha256_file

MISSING = "missing"


def content_version(config: RouterConfig, models_dir: Path) -> str:
    """A short digest of the unpinned sources' content on disk ("" when every source is
    pinned). Reads example sets whole (they are small and L0 reads them anyway) but never a
    model's bytes: the fetch's marker digest, else the files' sizes and modification
    times."""
    parts = [
        f"examples {source.path} {_file_digest(models_dir / source.path)}"
        for source in config.examples_from
        if source.sha256 is None
    ]
    parts += [
        f"model {layer.name} {_model_digest(models_dir / layer.model.path)}"
        for layer in config.layers
        if layer.enabled and layer.model.sha256 is None
    ]
    if not parts:
        return ""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError:
        return MISSING


def _model_digest(location: Path) -> str:
    if location.is_dir():
        marker = read_marker(location / MARKER)
        if marker is not None and isinstance(marker.get("sha256"), str):
            return str(marker["sha256"])
        files = sorted(p for p in location.rglob("*") if p.is_file())
    elif location.is_file():
        files = [location]
    else:
        return MISSING
    # Hashing a model of gigabytes at every load would stall reloads: a rewritten file
    # changes its size or modification time, and that is enough to drop stale decisions.
    try:
        stamps = [
            f"{p.relative_to(location).as_posix()} {p.stat().st_size} {p.stat().st_mtime_ns}"
            for p in files
        ]
    except OSError:
        return MISSING
    return hashlib.sha256("\n".join(stamps).encode()).hexdigest()
