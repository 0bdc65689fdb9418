"""The operator's log lines: one lean JSON object per line on stderr.

kopf attaches its whole ``OperatorSettings`` to every per-object record (about 2 KB once
written out) and logs handler failures with their exception: a line here carries the
message, level, logger, the object it is about (kind, namespace, name), the fields our
own code adds, and on a failure the full traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}
_KOPF_ONLY = frozenset({"settings", "k8s_skip", "k8s_ref"})
"""kopf's per-object extras: its settings, whether to post an event, the reference
(written as ``object``)."""


def object_ref(record: logging.LogRecord) -> dict[str, str] | None:
    """kind, namespace and name of the object a record is about: kopf's reference, or the
    ``object`` our own code passes in ``extra``."""
    ref = getattr(record, "k8s_ref", None) or getattr(record, "object", None)
    if not isinstance(ref, dict):
        return None
    return {key: str(ref[key]) for key in ("kind", "namespace", "name") if ref.get(key)} or None


class OperatorJsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "object", ...our extra, "error", "traceback"}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ref = object_ref(record)
        if ref is not None:
            entry["object"] = ref
        for key, value in vars(record).items():
            if key in _STANDARD or key in _KOPF_ONLY or key == "object" or key.startswith("_"):
                continue
            entry[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            entry["error"] = f"{type(error).__name__}: {error}"
            entry["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr for the root logger (kopf's loggers propagate to it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OperatorJsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Every request of our client would be a line; failures raise and are logged anyway.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # asyncio's debug chatter only when asked for.
    logging.getLogger("asyncio").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
