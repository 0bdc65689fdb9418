"""One kopf login handler for every test that runs the operator in-process: it points kopf
at whatever the running test set (an emulator's URL, or the kubeconfig). The target is
replaced, never cleared, so kopf tasks that outlive a test never run out of credentials."""

from __future__ import annotations

from typing import Any

import kopf

TARGET: dict[str, str] = {}


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    server = TARGET.get("server")
    if server == "kubeconfig":
        info: kopf.ConnectionInfo | None = kopf.login_with_kubeconfig(**kwargs)
        return info
    if server:
        return kopf.ConnectionInfo(server=server, insecure=True, default_namespace="default")
    return None
