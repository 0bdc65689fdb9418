"""The MCP tool-routing benchmark's pure parts: reading servers.json, the tools a server
lists, the RouteTable over the servers (examples drawn seeded, descriptions on request),
and the check that every MCP route's tools are in use before a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from routermesh.cli import main
from routermesh.operator import api
from routermesh_bench.mcp_servers import (
    ServersError,
    ToolServerSpec,
    call_text,
    read_servers,
    tool_list,
)
from routermesh_bench.mcp_table import (
    McpTableError,
    McpTableOptions,
    build,
    draw_examples,
    mcp_url,
)
from routermesh_bench.stack import tools_missing

SERVERS = [
    {
        "name": "maps",
        "description": "Maps: routes and distances.",
        "in_table": True,
        "tools": [{"name": "maps.get_route", "description": "Find a route between two places."}],
    },
    {
        "name": "music",
        "description": "Music: chords and scales.",
        "in_table": True,
        "tools": [{"name": "music_theory.chords", "description": "Chords of a key."}],
    },
    {"name": "games", "description": "Games.", "in_table": False, "tools": [{"name": "play"}]},
]

TRAIN = [{"text": f"how do I get from A to B number {i}", "route": "maps"} for i in range(5)] + [
    {"text": f"which chords are in key {i}", "route": "music"} for i in range(5)
]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    (tmp_path / "servers.json").write_text(json.dumps(SERVERS))
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRAIN))
    reference = {
        "apiVersion": api.API_GROUP_VERSION,
        "kind": "RouteTable",
        "metadata": {"name": "tools", "labels": {"routermesh.io/mesh": "tools"}},
        "spec": {
            "routes": [
                {"name": "maps", "description": "Maps and routes.", "examples": ["x y"]},
                {"name": "music", "description": "Music theory.", "examples": ["x y"]},
            ]
        },
    }
    (tmp_path / "routetable.yaml").write_text(yaml.safe_dump(reference))
    return tmp_path


def test_read_servers_all_or_in_table(data: Path) -> None:
    assert [s.name for s in read_servers(data / "servers.json")] == ["maps", "music", "games"]
    specs = read_servers(data / "servers.json", in_table_only=True)
    assert [s.name for s in specs] == ["maps", "music"]
    assert specs[0].tools == (
        {"name": "maps.get_route", "description": "Find a route between two places."},
    )


def test_read_servers_refuses_malformed(tmp_path: Path) -> None:
    path = tmp_path / "servers.json"
    path.write_text(json.dumps([{"name": "a", "tools": []}, {"name": "a", "tools": []}]))
    with pytest.raises(ServersError, match="twice"):
        read_servers(path)
    path.write_text(json.dumps([{"name": "a", "tools": [{"description": "no name"}]}]))
    with pytest.raises(ServersError, match="without a name"):
        read_servers(path)
    path.write_text(json.dumps({"name": "a"}))
    with pytest.raises(ServersError, match="list"):
        read_servers(path)


def test_tool_list_and_call_text() -> None:
    spec = ToolServerSpec("maps", "", True, ({"name": "maps.get_route", "description": "d"},))
    assert tool_list(spec) == [
        {"name": "maps.get_route", "description": "d", "inputSchema": {"type": "object"}}
    ]
    assert call_text("maps", "maps.get_route", {"to": 1, "from": 2}) == (
        "maps: maps.get_route done (from, to)"
    )
    assert call_text("maps", "t", None) == "maps: t done (no arguments)"


def test_draw_examples_seeded_and_bounded() -> None:
    rows = [(r["text"], r["route"]) for r in TRAIN] + [("off topic", "__escalate__")]
    first = draw_examples(rows, ["music", "maps"], 3, seed=0)
    assert first == draw_examples(rows, ["maps", "music"], 3, seed=0)
    assert {route: len(texts) for route, texts in first.items()} == {"maps": 3, "music": 3}
    assert len(set(first["maps"])) == 3
    assert draw_examples(rows, ["maps"], 0, seed=0) == {"maps": []}
    assert len(draw_examples(rows, ["maps", "absent"], 9, seed=0)["maps"]) == 5
    with pytest.raises(McpTableError):
        draw_examples(rows, ["maps"], -1, seed=0)


def test_table_tools_only_by_default(data: Path) -> None:
    options = McpTableOptions(
        servers=data / "servers.json",
        train=data / "train.jsonl",
        examples=0,
        port=9400,
        reference=data / "routetable.yaml",
    )
    manifest = build(options)
    assert manifest["metadata"] == {"name": "tools", "labels": {"routermesh.io/mesh": "tools"}}
    routes = manifest["spec"]["routes"]
    assert [r["name"] for r in routes] == ["maps", "music"]
    assert routes[0] == {
        "name": "maps",
        "target": {"url": mcp_url("127.0.0.1", 9400, "maps"), "mcp": {"pingSeconds": 30}},
    }
    assert routes[0]["target"]["url"] == "http://127.0.0.1:9400/maps/mcp"


def test_table_with_examples_and_descriptions(data: Path) -> None:
    options = McpTableOptions(
        servers=data / "servers.json",
        train=data / "train.jsonl",
        examples=2,
        descriptions=True,
        reference=data / "routetable.yaml",
        max_tools=128,
    )
    routes = build(options)["spec"]["routes"]
    assert [r["description"] for r in routes] == ["Maps and routes.", "Music theory."]
    assert [len(r["examples"]) for r in routes] == [2, 2]
    assert routes[1]["target"]["mcp"] == {"pingSeconds": 30, "maxTools": 128}
    too_many = McpTableOptions(
        servers=data / "servers.json", train=data / "train.jsonl", examples=6
    )
    with pytest.raises(McpTableError, match="fewer than 6"):
        build(too_many)


def test_table_refuses_other_routes_than_the_reference(data: Path) -> None:
    servers = [*SERVERS[:1], {**SERVERS[2], "in_table": True}]
    (data / "servers.json").write_text(json.dumps(servers))
    options = McpTableOptions(
        servers=data / "servers.json", train=None, reference=data / "routetable.yaml"
    )
    with pytest.raises(McpTableError, match="differ"):
        build(options)


def test_mcp_table_command_writes_a_valid_table(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = data / "table.yaml"
    code = main(
        [
            "bench",
            "mcp-table",
            "--servers",
            str(data / "servers.json"),
            "--train",
            str(data / "train.jsonl"),
            "--reference",
            str(data / "routetable.yaml"),
            "--examples",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "2 MCP routes, 2 examples, descriptions off" in capsys.readouterr().out
    table = yaml.safe_load(out.read_text())
    api.RouteTable.model_validate(table)
    assert all("description" not in r for r in table["spec"]["routes"])


def test_tools_missing() -> None:
    readyz = {"mcp": {"maps": {"tools": 3}, "music": {"tools": 0}}}
    assert tools_missing(readyz, {"maps": 3, "music": 0}, ["maps", "music"]) == ["music"]
    # listed by the server, but not yet in the running config
    assert tools_missing(readyz, {"maps": 0}, ["maps"]) == ["maps"]
    assert tools_missing({}, {}, ["maps"]) == ["maps"]
    assert tools_missing(readyz, {"maps": 3}, ["maps"]) == []
