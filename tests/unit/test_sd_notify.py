"""sd_notify against a real unix datagram socket, as systemd's NOTIFY_SOCKET is one.

Type=notify units start their dependents only when READY=1 arrives: a helper that silently
sent nothing would leave systemd waiting until its start timeout.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from milters.common.lifecycle import sd_notify


def test_ready_reaches_the_notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify("READY=1") is True
        assert sd_notify("STOPPING=1") is True
        listener.settimeout(2)
        assert listener.recv(4096) == b"READY=1"
        assert listener.recv(4096) == b"STOPPING=1"


def test_abstract_socket_name(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"mailglue-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify("READY=1") is True
        listener.settimeout(2)
        assert listener.recv(4096) == b"READY=1"


def test_without_systemd_it_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False


def test_a_vanished_socket_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sd_notify("READY=1") is False
