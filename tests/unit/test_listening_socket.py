"""The orchestrator's listening socket: a second router on the same port fails to bind,
unless every process asked to share it (``--reuse-port``, ``router-mesh local
--workers``)."""

from __future__ import annotations

import pytest

from routermesh.runtime.server import listening_socket
from tests.support import free_port


def test_a_second_bind_of_the_port_fails_unless_both_share_it() -> None:
    port = free_port()
    first = listening_socket("127.0.0.1", port)
    first.listen()
    try:
        with pytest.raises(OSError):
            listening_socket("127.0.0.1", port, reuse_port=True)
    finally:
        first.close()

    shared = [listening_socket("127.0.0.1", port, reuse_port=True) for _ in range(2)]
    try:
        for sock in shared:
            sock.listen()
        assert {sock.getsockname()[1] for sock in shared} == {port}
    finally:
        for sock in shared:
            sock.close()
