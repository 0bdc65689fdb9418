"""The orchestrator's HTTP stack: httptools (a dependency) when installed, h11 otherwise;
always the asyncio loop."""

from __future__ import annotations

import importlib.util

import pytest

from routermesh.runtime import server


def test_the_fast_parser_is_installed_and_chosen_with_the_asyncio_loop() -> None:
    assert server.fast_stack() == ("httptools", "asyncio")


def test_without_httptools_the_orchestrator_parses_with_h11(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec

    def missing(name: str, *args: object) -> object:
        return None if name == "httptools" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    assert server.fast_stack() == ("h11", "asyncio")
