"""Why a config's sources no longer render, in a file beside ``router.json``.

In the cluster the operator renders the YAML and reports a bad edit on the resource's
status, while the pod keeps its config. ``router-mesh local`` renders the YAML itself and
writes the config where the orchestrator watches it; when an edit no longer renders, it
keeps the running config and writes why here (file name and problem, as the renderer
says them), and the orchestrator shows it in ``config_error`` on /readyz and /v1/config,
as it shows a rejected config, until the file is gone.
"""

from __future__ import annotations

from pathlib import Path

FILENAME = "source-error.txt"
MAX_CHARS = 2000
"""What is shown of it (an error may quote a whole document)."""


def write(directory: Path, error: str | None) -> None:
    """Say why the sources do not render; None: they render again (the file goes)."""
    path = directory / FILENAME
    if error is None:
        path.unlink(missing_ok=True)
        return
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f".{FILENAME}.tmp"
    temporary.write_text(error + "\n", encoding="utf-8")
    temporary.replace(path)  # never half a message


def read(directory: Path) -> str | None:
    """The error on one line, capped; None when there is none."""
    try:
        text = (directory / FILENAME).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None  # none written (the pod's ConfigMap never has one)
    return " ".join(text.split())[:MAX_CHARS] or None
