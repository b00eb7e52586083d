"""scripts/host-dns.sh: a host whose unbound stopped without `make down` gets its DNS back.

The CI run after a session that ended mid-deploy failed in pip with "Temporary failure in
name resolution": /etc/resolv.conf still named unbound on 127.0.0.1, which was gone.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "host-dns.sh"
OURS = (
    "# Ansible managed\n"
    "# This host's own DNSSEC-validating resolver: unbound on loopback (resolver role).\n"
    "nameserver 127.0.0.1\noptions trust-ad\n"
)
UPSTREAM = "nameserver 10.255.255.53\n"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(tmp_path: Path, resolv: str, port: int, *args: str) -> str:
    (tmp_path / "resolv.conf").write_text(resolv)
    (tmp_path / "upstream").write_text(UPSTREAM)
    env = dict(
        os.environ,
        RESOLV_CONF=str(tmp_path / "resolv.conf"),
        UPSTREAM_RESOLV_CONF=str(tmp_path / "upstream"),
        RESOLVER_PORT=str(port),
    )
    subprocess.run(["bash", str(SCRIPT), *args], env=env, check=True, capture_output=True)
    return (tmp_path / "resolv.conf").read_text()


def test_a_resolver_that_is_gone_gives_way_to_the_upstream_one(tmp_path: Path) -> None:
    assert _run(tmp_path, OURS, _free_port()) == UPSTREAM


def test_a_running_resolver_keeps_the_file(tmp_path: Path, listener: socket.socket) -> None:
    assert _run(tmp_path, OURS, listener.getsockname()[1]) == OURS


def test_make_down_restores_even_while_it_still_runs(
    tmp_path: Path, listener: socket.socket
) -> None:
    assert _run(tmp_path, OURS, listener.getsockname()[1], "--always") == UPSTREAM


def test_a_file_the_role_did_not_write_is_left_alone(tmp_path: Path) -> None:
    theirs = "nameserver 192.0.2.1\n"
    assert _run(tmp_path, theirs, _free_port(), "--always") == theirs
