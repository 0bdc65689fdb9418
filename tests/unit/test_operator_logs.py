"""The operator's JSON log lines: kopf's per-object records without kopf's settings, the
object as kind/namespace/name, and a failure's full traceback; `router-mesh operator`
installs them."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from routermesh import cli
from routermesh.operator.logs import OperatorJsonFormatter

BODY = {
    "apiVersion": "routermesh.io/v1alpha1",
    "kind": "RouterMesh",
    "metadata": {"name": "homelab", "namespace": "tools", "uid": "u-1"},
}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kopf_records() -> Iterator[list[logging.LogRecord]]:
    handler = _Records()
    logger = logging.getLogger("kopf.objects")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


def _reconcile_that_fails() -> None:
    raise RuntimeError("probe exploded")


def _kopf_logger() -> Any:
    # The logger kopf hands to handlers and uses for their outcomes.
    from kopf._core.actions.loggers import ObjectLogger  # noqa: PLC0415 - kopf internals

    return ObjectLogger(body=kopf.Body(BODY), settings=kopf.OperatorSettings())


def test_a_failing_handler_is_one_lean_line_with_its_traceback(
    kopf_records: list[logging.LogRecord],
) -> None:
    logger = _kopf_logger()
    try:
        _reconcile_that_fails()
    except RuntimeError as error:
        # What kopf's execution does when a handler raises.
        logger.exception(
            f"Handler 'mesh_changed' failed with an exception and will try again in 1 seconds: "
            f"{error}"
        )
    line = OperatorJsonFormatter().format(kopf_records[-1])
    entry = json.loads(line)
    assert set(entry) == {"ts", "level", "logger", "msg", "object", "error", "traceback"}
    assert entry["level"] == "error" and entry["logger"] == "kopf.objects"
    assert entry["object"] == {"kind": "RouterMesh", "namespace": "tools", "name": "homelab"}
    assert entry["error"] == "RuntimeError: probe exploded"
    assert entry["traceback"].startswith("Traceback (most recent call last):")
    assert "in _reconcile_that_fails" in entry["traceback"]
    assert "OperatorSettings" not in line and "settings" not in entry
    assert len(line) - len(json.dumps(entry["traceback"])) < 400


def test_a_plain_kopf_line_carries_no_settings(kopf_records: list[logging.LogRecord]) -> None:
    _kopf_logger().info("Handler 'mesh_changed' succeeded.")
    line = OperatorJsonFormatter().format(kopf_records[-1])
    entry = json.loads(line)
    assert set(entry) == {"ts", "level", "logger", "msg", "object"}
    assert entry["msg"] == "Handler 'mesh_changed' succeeded."
    assert len(line) < 250


def test_our_own_lines_keep_their_fields_and_object() -> None:
    record = logging.LogRecord("routermesh.operator", logging.INFO, "x", 1, "model set", (), None)
    record.object = {"namespace": "tools", "name": "homelab"}
    record.decision = "waiting"
    entry = json.loads(OperatorJsonFormatter().format(record))
    assert entry["object"] == {"namespace": "tools", "name": "homelab"}
    assert entry["decision"] == "waiting" and "traceback" not in entry


def test_the_operator_command_installs_the_lean_format(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kw: ran.append(kw))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        args = argparse.Namespace(
            log_level="info", metrics_port=0, namespace=["tools"], liveness="", peering=""
        )
        assert cli.cmd_operator(args) == 0
        assert [type(h.formatter) for h in root.handlers] == [OperatorJsonFormatter]
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    assert ran and ran[0]["namespaces"] == ["tools"]
