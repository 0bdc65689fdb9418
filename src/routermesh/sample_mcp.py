"""Two small MCP servers for trying router-mesh out: a home network and a small
virtualization cluster, each with its own in-memory inventory.

They are real MCP servers (the official SDK's ``MCPServer``, streamable HTTP at
``/mcp``): their tools are listed with names, titles, descriptions and typed parameters,
and calling one reads or changes that server's inventory. ``samples/mcp/`` routes over
them with no hand-written examples: the router discovers their tools.

    router-mesh sample-mcp network --port 9101
    router-mesh sample-mcp compute --port 9102
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from pydantic import Field

SampleName = Literal["network", "compute"]
SAMPLES: tuple[SampleName, ...] = ("network", "compute")


@dataclass
class Network:
    clients: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "aa:bb:cc:00:00:01": {"name": "kids-tablet", "ssid": "home", "blocked": False},
            "aa:bb:cc:00:00:02": {"name": "office-laptop", "ssid": "home", "blocked": False},
            "aa:bb:cc:00:00:03": {"name": "guest-phone", "ssid": "guest", "blocked": False},
        }
    )
    devices: dict[str, str] = field(
        default_factory=lambda: {"ap-living-room": "online", "usw-24": "online"}
    )
    ssids: dict[str, str] = field(default_factory=lambda: {"home": "********", "guest": "****"})
    vlans: dict[int, str] = field(default_factory=lambda: {1: "default", 20: "cameras"})
    forwards: list[str] = field(default_factory=list)


@dataclass
class Cluster:
    vms: dict[int, dict[str, Any]] = field(
        default_factory=lambda: {
            101: {"name": "home-assistant", "node": "pve1", "state": "running", "snapshots": []},
            104: {"name": "ubuntu-dev", "node": "pve1", "state": "stopped", "snapshots": []},
            110: {"name": "postgres", "node": "pve2", "state": "running", "snapshots": []},
        }
    )
    storage: dict[str, dict[str, int]] = field(
        default_factory=lambda: {"local-zfs": {"used_gb": 412, "size_gb": 900}}
    )


def network_server() -> MCPServer:
    state = Network()
    server = MCPServer(
        "homelab-network",
        version="1.0.0",
        instructions="The home network controller: Wi-Fi, clients, switches, VLANs, ports.",
    )

    @server.tool(
        title="Connected clients",
        description="List the client devices connected to the Wi-Fi networks and the LAN, "
        "with their SSID.",
    )
    def list_clients(
        ssid: Annotated[str | None, Field(description="Only clients of this Wi-Fi network")] = None,
    ) -> list[dict[str, Any]]:
        return [
            {"mac": mac, **client}
            for mac, client in state.clients.items()
            if ssid is None or client["ssid"] == ssid
        ]

    @server.tool(
        title="Block a client",
        description="Block a client device from the internet by its MAC address.",
    )
    def block_client(mac: Annotated[str, Field(description="MAC address of the device")]) -> str:
        if mac not in state.clients:
            return f"no client {mac}"
        state.clients[mac]["blocked"] = True
        return f"{state.clients[mac]['name']} blocked"

    @server.tool(
        title="Restart a device", description="Restart an access point or a switch of the network."
    )
    def restart_device(
        name: Annotated[str, Field(description="Access point or switch name")],
    ) -> str:
        if name not in state.devices:
            return f"no device {name}"
        return f"{name} restarting"

    @server.tool(
        title="Network devices",
        description="List the access points and switches with their status, ports and signal.",
    )
    def list_devices() -> dict[str, str]:
        return dict(state.devices)

    @server.tool(
        title="Wi-Fi networks",
        description="List the Wi-Fi networks (SSIDs) and their security settings.",
    )
    def list_wifi_networks() -> list[str]:
        return sorted(state.ssids)

    @server.tool(
        title="Change a Wi-Fi password",
        description="Change the password of a Wi-Fi network (SSID).",
    )
    def set_wifi_password(
        ssid: Annotated[str, Field(description="Wi-Fi network name")],
        password: Annotated[str, Field(description="New password, 8 characters or more")],
    ) -> str:
        if ssid not in state.ssids or len(password) < 8:
            return "refused"
        state.ssids[ssid] = "*" * len(password)
        return f"password of {ssid} changed"

    @server.tool(
        title="Create a VLAN",
        description="Create a VLAN with an id and a name for a group of devices.",
    )
    def create_vlan(
        vlan_id: Annotated[int, Field(description="VLAN id, 2 to 4094", ge=2, le=4094)],
        name: Annotated[str, Field(description="VLAN name")],
    ) -> str:
        state.vlans[vlan_id] = name
        return f"VLAN {vlan_id} ({name}) created"

    @server.tool(
        title="Forward a port",
        description="Open a port on the firewall and forward it to a LAN address.",
    )
    def forward_port(
        port: Annotated[int, Field(description="Public port", ge=1, le=65535)],
        address: Annotated[str, Field(description="LAN IP address to forward to")],
    ) -> str:
        state.forwards.append(f"{port}->{address}")
        return f"port {port} forwarded to {address}"

    @server.tool(
        title="DHCP leases",
        description="List the DHCP leases of the LAN: IP addresses handed to devices.",
    )
    def list_dhcp_leases() -> list[str]:
        return [f"192.168.1.{10 + i} {c['name']}" for i, c in enumerate(state.clients.values())]

    return server


def compute_server() -> MCPServer:
    state = Cluster()
    server = MCPServer(
        "homelab-compute",
        version="1.0.0",
        instructions="The virtualization cluster: virtual machines, containers, nodes, storage.",
    )

    @server.tool(
        title="Virtual machines",
        description="List the virtual machines and containers with their node and state.",
    )
    def list_vms() -> dict[int, dict[str, Any]]:
        return {
            vmid: {k: v for k, v in vm.items() if k != "snapshots"}
            for vmid, vm in state.vms.items()
        }

    @server.tool(title="Start a VM", description="Start a virtual machine or container.")
    def start_vm(vmid: Annotated[int, Field(description="VM id")]) -> str:
        return _set_state(state, vmid, "running")

    @server.tool(title="Stop a VM", description="Shut down a virtual machine or container.")
    def stop_vm(vmid: Annotated[int, Field(description="VM id")]) -> str:
        return _set_state(state, vmid, "stopped")

    @server.tool(
        title="Snapshot a VM", description="Take a snapshot of a virtual machine before a change."
    )
    def snapshot_vm(
        vmid: Annotated[int, Field(description="VM id")],
        name: Annotated[str, Field(description="Snapshot name")] = "before-change",
    ) -> str:
        if vmid not in state.vms:
            return f"no VM {vmid}"
        state.vms[vmid]["snapshots"].append(name)
        return f"snapshot {name} of VM {vmid} taken"

    @server.tool(
        title="Migrate a VM",
        description="Migrate a virtual machine or container to another cluster node.",
    )
    def migrate_vm(
        vmid: Annotated[int, Field(description="VM id")],
        node: Annotated[str, Field(description="Target node, e.g. pve2")],
    ) -> str:
        if vmid not in state.vms:
            return f"no VM {vmid}"
        state.vms[vmid]["node"] = node
        return f"VM {vmid} migrated to {node}"

    @server.tool(
        title="Create a container", description="Create an LXC container with CPU cores and memory."
    )
    def create_container(
        name: Annotated[str, Field(description="Container name")],
        cores: Annotated[int, Field(description="CPU cores", ge=1, le=64)] = 2,
        memory_gb: Annotated[int, Field(description="Memory in GB", ge=1, le=512)] = 4,
    ) -> str:
        vmid = max(state.vms) + 1
        state.vms[vmid] = {"name": name, "node": "pve1", "state": "stopped", "snapshots": []}
        return f"container {name} ({cores} cores, {memory_gb} GB) created as {vmid}"

    @server.tool(
        title="Back up a VM",
        description="Back up a virtual machine now, or restore its latest backup.",
    )
    def backup_vm(
        vmid: Annotated[int, Field(description="VM id")],
        restore: Annotated[bool, Field(description="Restore the latest backup instead")] = False,
    ) -> str:
        return f"{'restore' if restore else 'backup'} of VM {vmid} started"

    @server.tool(
        title="Storage usage",
        description="Show the used and free space of the storage pools (ZFS, local).",
    )
    def storage_usage() -> dict[str, dict[str, int]]:
        return state.storage

    @server.tool(
        title="Cluster status",
        description="Show the cluster quorum and the CPU and memory usage of each node.",
    )
    def cluster_status() -> dict[str, Any]:
        return {"quorate": True, "nodes": {"pve1": "online", "pve2": "online"}}

    return server


def _set_state(state: Cluster, vmid: int, new: str) -> str:
    if vmid not in state.vms:
        return f"no VM {vmid}"
    state.vms[vmid]["state"] = new
    return f"VM {vmid} {new}"


def sample_server(name: SampleName) -> MCPServer:
    return network_server() if name == "network" else compute_server()


def serve(name: SampleName, host: str, port: int) -> None:
    """Serve one sample until interrupted."""
    import uvicorn  # noqa: PLC0415 - only when serving

    server = sample_server(name)
    # The SDK configures the root logger; keep the router's format for our own lines.
    logging.getLogger("mcp").setLevel(logging.WARNING)
    app = server.streamable_http_app(streamable_http_path="/mcp", host=host)
    uvicorn.run(app, host=host, port=port, log_level="warning")
