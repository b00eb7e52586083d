"""LmtpClient against a scripted LMTP server on real sockets (TCP and unix).

The server sends every reply one byte at a time, so the client's parser sees replies cut at
every possible place. In PIPELINING mode it holds back all replies until the DATA command
arrives (a lock-step client would hang); without PIPELINING it records any command that arrives
before the previous one was answered.
"""

from __future__ import annotations

import hashlib
import io
import select
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pytest

from lmtp_bridge.client import (
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    LmtpClient,
    Timeouts,
)
from lmtp_bridge.outcome import NotAttempted, NotAttemptedReason
from lmtp_bridge.protocol import MailAddressError, Stage

FAST = Timeouts(connect=2.0, command=2.0, data=5.0, final=2.0)


@dataclass
class Script:
    """How the scripted server behaves."""

    pipelining: bool = True
    greeting: str = "220 lmtp.test LMTP scripted server ready"
    mail_reply: str = "250 2.1.0 Ok"
    rcpt: dict[str, str] = field(default_factory=dict)  # address → reply (default 250)
    final: dict[str, str] = field(default_factory=dict)  # address → reply after the dot
    close_on: str | None = None  # "RCPT", "DOT" (after the dot), "AFTER-TX", "NEXT-MAIL"
    finals_before_close: int | None = None  # send this many final replies, then close
    hang_on: str | None = None  # "GREETING", "RCPT", "FINAL": never answer
    garbage_on: str | None = None  # "MAIL": answer with a non-reply
    say_after_tx: str | None = None  # an unsolicited line after the final replies


@dataclass
class Session:
    """What one connection saw."""

    commands: list[str] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    wire_ok: bool = True  # the DATA stream had no bare CR or LF
    lockstep_violations: list[str] = field(default_factory=list)


class _Wire:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def line(self) -> bytes | None:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[: end + 2]
                return line
            data = self.sock.recv(256 * 1024)
            if not data:
                return None
            self.buf += data

    def pending(self, wait: float) -> bool:
        if self.buf:
            return True
        readable, _, _ = select.select([self.sock], [], [], wait)
        return bool(readable)

    def send(self, text: str) -> None:
        for byte in f"{text}\r\n".encode():
            self.sock.sendall(bytes([byte]))


class ScriptedLmtpServer:
    """A thread accepting connections and playing `script` on each."""

    def __init__(self, family: str, script: Script) -> None:
        self.script = script
        self.sessions: list[Session] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._dir: str | None = None
        if family == "unix":
            self._dir = tempfile.mkdtemp(prefix="lmtp", dir="/tmp")
            path = str(Path(self._dir) / "s")
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(path)
            self.address = f"unix:{path}"
        else:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.bind(("127.0.0.1", 0))
            self.address = f"inet:127.0.0.1:{self.listener.getsockname()[1]}"
        self.listener.listen(8)
        self.listener.settimeout(0.05)

    def __enter__(self) -> ScriptedLmtpServer:
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self.listener.close()
        for s in self._socks:
            s.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            if sock.family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socks.append(sock)
            session = Session()
            self.sessions.append(session)
            t = threading.Thread(target=self._serve, args=(sock, session), daemon=True)
            t.start()
            self._threads.append(t)

    def _hang(self) -> None:
        self._stop.wait()

    def _serve(self, sock: socket.socket, session: Session) -> None:
        try:
            self._session(_Wire(sock), session)
        except OSError:
            pass
        finally:
            sock.close()

    def _session(self, wire: _Wire, session: Session) -> None:
        s = self.script
        if s.hang_on == "GREETING":
            return self._hang()
        wire.send(s.greeting)
        held: list[str] = []
        accepted: list[str] = []
        in_mail = False

        def answer(text: str) -> None:
            if s.pipelining:
                held.append(text)
            else:
                wire.send(text)

        def flush() -> None:
            for text in held:
                wire.send(text)
            held.clear()

        while True:
            raw = wire.line()
            if raw is None:
                return None
            cmd = raw.decode()
            session.commands.append(cmd)
            verb = cmd[:4].upper()
            if not s.pipelining and verb in ("MAIL", "RCPT", "DATA") and wire.pending(0.02):
                session.lockstep_violations.append(cmd)
            if verb == "LHLO":
                caps = ["8BITMIME", "ENHANCEDSTATUSCODES", "SIZE 100000000"]
                if s.pipelining:
                    caps.insert(0, "PIPELINING")
                lines = ["lmtp.test", *caps]
                for i, line in enumerate(lines):
                    wire.send(f"250{'-' if i < len(lines) - 1 else ' '}{line}")
            elif verb == "MAIL":
                if s.close_on == "NEXT-MAIL" and session.messages:
                    return None
                if s.garbage_on == "MAIL":
                    wire.send("this is not a reply")
                    continue
                in_mail = s.mail_reply.startswith("2")
                accepted = []
                answer(s.mail_reply)
            elif verb == "RCPT":
                if s.close_on == "RCPT":
                    return None
                if s.hang_on == "RCPT":
                    return self._hang()
                addr = cmd.split(":", 1)[1].strip("<>")
                reply = s.rcpt.get(addr, "250 2.1.5 Ok") if in_mail else "503 5.5.1 MAIL first"
                if reply.startswith("2"):
                    accepted.append(addr)
                answer(reply)
            elif verb == "DATA":
                if not accepted:
                    answer("503 5.5.1 No valid recipients")
                    flush()
                    continue
                answer("354 Go ahead")
                flush()
                session.messages.append(self._read_data(wire, session))
                if s.close_on == "DOT":
                    return None
                if s.hang_on == "FINAL":
                    return self._hang()
                for i, addr in enumerate(accepted):
                    if s.finals_before_close is not None and i >= s.finals_before_close:
                        return None
                    wire.send(s.final.get(addr, "250 2.1.5 Ok"))
                accepted, in_mail = [], False
                if s.close_on == "AFTER-TX":
                    return None
                if s.say_after_tx is not None:
                    wire.send(s.say_after_tx)
            elif verb == "RSET":
                accepted, in_mail = [], False
                answer("250 2.0.0 Ok")
                flush()
            elif verb == "NOOP":
                answer("250 2.0.0 Ok")
                flush()
            elif verb == "QUIT":
                answer("221 2.0.0 Bye")
                flush()
                return None
            else:
                answer("500 5.5.2 Unknown command")
                flush()

    @staticmethod
    def _read_data(wire: _Wire, session: Session) -> bytes:
        body = bytearray()
        while True:
            line = wire.line()
            if line is None:
                raise OSError("EOF in DATA")
            if line == b".":
                return bytes(body)
            if b"\r" in line or b"\n" in line:
                session.wire_ok = False
            body += (line[1:] if line.startswith(b".") else line) + b"\r\n"


Serve = Callable[..., ScriptedLmtpServer]


@pytest.fixture(params=["tcp", "unix"])
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve(family: str) -> Iterator[Serve]:
    def make(script: Script | None = None) -> ScriptedLmtpServer:
        server = ScriptedLmtpServer(family, script or Script())
        started.append(server)
        return server.__enter__()

    started: list[ScriptedLmtpServer] = []
    yield make
    for server in started:
        server.__exit__(None, None, None)


MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"


@pytest.mark.parametrize("pipelining", [True, False])
def test_per_recipient_replies(serve: Serve, pipelining: bool) -> None:
    server = serve(
        Script(
            pipelining=pipelining,
            rcpt={"nobody@x": "550 5.1.1 User unknown"},
            final={"full@x": "452 4.2.2 Over quota"},
        )
    )
    with LmtpClient(server.address, lhlo_name="mx.test", timeouts=FAST) as client:
        result = client.deliver("s@x", ["a@x", "nobody@x", "full@x", "a@x"], MESSAGE)
    assert {r: str(rr) for r, rr in result.outcomes.items()} == {
        "a@x": "250 2.1.5 Ok (at final)",
        "nobody@x": "550 5.1.1 User unknown (at rcpt)",
        "full@x": "452 4.2.2 Over quota (at final)",
    }
    assert result.replies["a@x"].is_positive
    assert result.backend == server.address
    (session,) = server.sessions
    assert session.commands[:6] == [
        "LHLO mx.test",
        f"MAIL FROM:<s@x> SIZE={len(MESSAGE)}",
        "RCPT TO:<a@x>",
        "RCPT TO:<nobody@x>",
        "RCPT TO:<full@x>",
        "DATA",
    ]
    assert session.messages == [MESSAGE]
    assert session.lockstep_violations == []
    assert result.timings.total_ms >= result.timings.final_ms >= 0
    assert not result.timings.reused_connection


def test_dot_stuffing_and_line_ends_on_the_wire(serve: Serve) -> None:
    server = serve()
    message = b"Subject: dots\n\n.\n..two\r\n.x\rbare\r\nend"
    with LmtpClient(server.address, timeouts=FAST) as client:
        client.deliver("", ["a@x"], message)
    (session,) = server.sessions
    assert session.wire_ok
    assert session.messages == [b"Subject: dots\r\n\r\n.\r\n..two\r\n.xbare\r\nend\r\n"]
    assert session.commands[1] == f"MAIL FROM:<> SIZE={len(message)}"


def test_8bit_message_declares_8bitmime(serve: Serve) -> None:
    server = serve()
    message = "Subject: caf\u00e9\r\n\r\n\u00e9t\u00e9\r\n".encode()
    with LmtpClient(server.address, timeouts=FAST) as client:
        client.deliver("s@x", ["a@x"], io.BytesIO(message))
    assert server.sessions[0].commands[1] == f"MAIL FROM:<s@x> SIZE={len(message)} BODY=8BITMIME"
    assert server.sessions[0].messages == [message]


def test_all_recipients_refused_sends_no_body(serve: Serve) -> None:
    server = serve(Script(rcpt={"a@x": "550 5.1.1 User unknown"}))
    with LmtpClient(server.address, timeouts=FAST) as client:
        result = client.deliver("s@x", ["a@x"], MESSAGE)
        assert result.outcomes["a@x"].stage is Stage.RCPT
        again = client.deliver("s@x", ["b@x"], MESSAGE)  # same connection, RSET first
    assert again.replies["b@x"].code == 250
    (session,) = server.sessions
    assert session.messages == [MESSAGE]
    assert session.commands.count("RSET") == 1


def test_connection_reused_at_once_after_a_complete_transaction(serve: Serve) -> None:
    """The dot's replies left the session in its initial state: no RSET round trip."""
    server = serve()
    with LmtpClient(server.address, timeouts=FAST) as client:
        first = client.deliver("s@x", ["a@x"], MESSAGE)
        second = client.deliver("s@x", ["b@x"], MESSAGE)
        assert client.connected
    assert not first.timings.reused_connection and second.timings.reused_connection
    assert first.replaced is None and second.replaced is None
    (session,) = server.sessions
    assert "RSET" not in session.commands
    assert session.messages == [MESSAGE, MESSAGE]
    assert session.commands[-1] == "QUIT"


def test_connection_idle_beyond_trust_idle_is_checked_with_rset(serve: Serve) -> None:
    server = serve()
    with LmtpClient(server.address, timeouts=FAST, trust_idle=0.0) as client:
        client.deliver("s@x", ["a@x"], MESSAGE)
        time.sleep(0.01)
        second = client.deliver("s@x", ["b@x"], MESSAGE)
    assert second.timings.reused_connection
    (session,) = server.sessions
    second_mail = session.commands.index(f"MAIL FROM:<s@x> SIZE={len(MESSAGE)}", 2)
    assert session.commands[second_mail - 1] == "RSET"


@pytest.mark.parametrize(
    ("script", "pause", "why"),
    [
        # the server closed the idle connection (its timeout, a restart)
        (Script(close_on="AFTER-TX"), 0.0, "the held connection was dead ("),
        # it said 421 (idle timeout, shutdown) between transactions: that connection is done
        (
            Script(say_after_tx="421 4.4.2 idle too long"),
            0.3,  # sent a byte at a time
            "RSET on the held connection answered 421 4.4.2 idle too long",
        ),
        # it hung up between our check and our MAIL: nothing was sent, so try again once
        (Script(close_on="NEXT-MAIL"), 0.0, "the held connection was closed by the server"),
    ],
    ids=["closed", "said-421", "closed-as-reused"],
)
def test_connection_the_server_gave_up_is_replaced(
    serve: Serve, script: Script, pause: float, why: str
) -> None:
    server = serve(script)
    with LmtpClient(server.address, timeouts=FAST) as client:
        client.deliver("s@x", ["a@x"], MESSAGE)
        time.sleep(pause)
        result = client.deliver("s@x", ["b@x"], MESSAGE)
    assert result.replies["b@x"].code == 250
    assert not result.timings.reused_connection
    assert result.replaced is not None and why in result.replaced  # for the caller's log
    assert [len(session.messages) for session in server.sessions] == [1, 1]


def test_idle_limit_opens_a_new_connection(serve: Serve) -> None:
    server = serve()
    with LmtpClient(server.address, timeouts=FAST, max_idle=0.0) as client:
        client.deliver("s@x", ["a@x"], MESSAGE)
        time.sleep(0.01)
        client.deliver("s@x", ["a@x"], MESSAGE)
    assert len(server.sessions) == 2
    assert server.sessions[0].commands[-1] == "QUIT"


def test_server_closes_mid_transaction(serve: Serve) -> None:
    server = serve(Script(close_on="RCPT"))
    client = LmtpClient(server.address, timeouts=FAST)
    with pytest.raises(BackendUnavailable) as info:
        client.deliver("s@x", ["a@x", "b@x"], MESSAGE)
    exc = info.value
    assert type(exc) is BackendUnavailable
    assert "closed the connection" in str(exc) and server.address in str(exc)
    assert not client.connected
    assert exc.partial == {} and not exc.after_data
    outcomes = exc.outcomes(["a@x", "b@x"])
    assert all(isinstance(o, NotAttempted) for o in outcomes.values())
    assert {o.reason for o in outcomes.values() if isinstance(o, NotAttempted)} == {
        NotAttemptedReason.UNREACHABLE
    }
    server.script.close_on = None  # the next message gets a fresh connection
    assert client.deliver("s@x", ["a@x"], MESSAGE).replies["a@x"].code == 250
    assert len(server.sessions) == 2
    client.close()


def test_close_after_the_dot_keeps_what_was_definitive(serve: Serve) -> None:
    server = serve(Script(rcpt={"no@x": "550 5.1.1 User unknown"}, finals_before_close=1))
    with (
        LmtpClient(server.address, timeouts=FAST) as client,
        pytest.raises(BackendUnavailable) as info,
    ):
        client.deliver("s@x", ["a@x", "no@x", "b@x"], MESSAGE)
    exc = info.value
    assert exc.after_data
    outcomes = exc.outcomes(["a@x", "no@x", "b@x"])
    assert str(outcomes["a@x"]) == "250 2.1.5 Ok"
    assert str(outcomes["no@x"]) == "550 5.1.1 User unknown"
    lost = outcomes["b@x"]
    assert isinstance(lost, NotAttempted)
    assert "may have been delivered" in lost.detail and lost.maybe_delivered


def test_server_that_never_answers_times_out(serve: Serve) -> None:
    server = serve(Script(hang_on="FINAL"))
    timeouts = Timeouts(connect=2, command=2, data=2, final=0.3)
    client = LmtpClient(server.address, timeouts=timeouts)
    start = time.monotonic()
    with pytest.raises(BackendTimeout) as info:
        client.deliver("s@x", ["a@x"], MESSAGE)
    assert time.monotonic() - start < 1.5
    assert "no reply within 0.3s" in str(info.value)
    assert info.value.after_data
    (outcome,) = info.value.outcomes(["a@x"]).values()
    assert isinstance(outcome, NotAttempted) and outcome.reason is NotAttemptedReason.TIMEOUT
    assert not client.connected


def test_silent_greeting_times_out(serve: Serve) -> None:
    server = serve(Script(hang_on="GREETING"))
    client = LmtpClient(server.address, timeouts=Timeouts(command=0.2))
    with pytest.raises(BackendTimeout, match="the greeting"):
        client.deliver("s@x", ["a@x"], MESSAGE)


def test_deadline_caps_every_stage(serve: Serve) -> None:
    server = serve(Script(hang_on="RCPT", pipelining=False))
    client = LmtpClient(server.address, timeouts=Timeouts(command=30))
    start = time.monotonic()
    with pytest.raises(BackendTimeout):
        client.deliver("s@x", ["a@x"], MESSAGE, deadline=time.monotonic() + 0.3)
    assert time.monotonic() - start < 1.5
    with pytest.raises(BackendTimeout, match="time budget"):
        client.deliver("s@x", ["a@x"], MESSAGE, deadline=time.monotonic() - 1)


def test_garbage_reply_is_a_protocol_error(serve: Serve) -> None:
    server = serve(Script(garbage_on="MAIL"))
    client = LmtpClient(server.address, timeouts=FAST)
    with pytest.raises(BackendProtocolError, match="garbled reply"):
        client.deliver("s@x", ["a@x"], MESSAGE)
    assert not client.connected


def test_refused_session_is_a_protocol_error(serve: Serve) -> None:
    server = serve(Script(greeting="421 4.3.2 shutting down"))
    with pytest.raises(BackendProtocolError, match=r"421 4\.3\.2 shutting down"):
        LmtpClient(server.address, timeouts=FAST).deliver("s@x", ["a@x"], MESSAGE)


def test_mail_refused_is_a_reply_for_every_recipient(serve: Serve) -> None:
    server = serve(Script(mail_reply="430 Authentication required"))
    with LmtpClient(server.address, timeouts=FAST) as client:
        result = client.deliver("s@x", ["a@x", "b@x"], MESSAGE)
    assert {str(rr) for rr in result.outcomes.values()} == {"430 Authentication required (at mail)"}


def test_nothing_listening(family: str) -> None:
    if family == "unix":
        address = "unix:/nonexistent/lmtp.sock"
    else:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        address = f"inet:127.0.0.1:{sock.getsockname()[1]}"
        sock.close()
    with pytest.raises(BackendUnavailable, match="cannot connect") as info:
        LmtpClient(address, timeouts=FAST).deliver("s@x", ["a@x"], MESSAGE)
    assert info.value.reason is NotAttemptedReason.UNREACHABLE
    assert address in str(info.value)


def test_bad_address_fails_before_any_io(serve: Serve) -> None:
    server = serve()
    with pytest.raises(MailAddressError):
        LmtpClient(server.address).deliver("s@x", ["a@x>\r\nRCPT TO:<evil@x"], MESSAGE)
    time.sleep(0.05)
    assert server.sessions == []


def test_probe(serve: Serve) -> None:
    server = serve(Script(rcpt={"nobody@x": "550 5.1.1 User unknown"}))
    with LmtpClient(server.address, timeouts=FAST) as client:
        assert str(client.probe("alice@x")) == "250 2.1.5 Ok"
        assert str(client.probe("nobody@x")) == "550 5.1.1 User unknown"
        assert client.deliver("s@x", ["alice@x"], MESSAGE).replies["alice@x"].code == 250
        assert client.noop().code == 250
    (session,) = server.sessions
    assert session.commands[1:4] == ["MAIL FROM:<>", "RCPT TO:<alice@x>", "RSET"]
    assert session.messages == [MESSAGE]


def test_probe_without_pipelining_is_lockstep(serve: Serve) -> None:
    server = serve(Script(pipelining=False))
    with LmtpClient(server.address, timeouts=FAST) as client:
        assert client.probe("alice@x").code == 250
    assert server.sessions[0].lockstep_violations == []


def test_probe_with_mail_refused_does_not_blame_the_mailbox(
    serve: Serve,
) -> None:
    server = serve(Script(mail_reply="430 Authentication required"))
    client = LmtpClient(server.address, timeouts=FAST)
    with pytest.raises(BackendUnavailable, match="MAIL FROM:<> refused"):
        client.probe("alice@x")


class CountingReader(io.RawIOBase):
    """A file that remembers the biggest read, to prove the client streams."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.max_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.inner.seek(offset, whence)

    def tell(self) -> int:
        return self.inner.tell()

    def read(self, size: int = -1) -> bytes:
        self.max_read = max(self.max_read, size if size >= 0 else 1 << 62)
        return self.inner.read(size)


def test_20mb_message_is_streamed(serve: Serve, tmp_path: Path) -> None:
    server = serve()
    path = tmp_path / "big.eml"
    digest = hashlib.sha256()
    with path.open("wb") as f:
        head = b"Subject: big\r\n\r\n"
        f.write(head)
        digest.update(head)
        i = 0
        while f.tell() < 20 * 1024 * 1024:
            line = (b"." if i % 7 == 0 else b"") + b"line %d " % i + b"x" * (i % 97) + b"\r\n"
            f.write(line)
            digest.update(line)
            i += 1
        size = f.tell()
    timeouts = Timeouts(connect=5, command=5, data=10, final=30)
    with path.open("rb") as raw, LmtpClient(server.address, timeouts=timeouts) as client:
        reader = CountingReader(raw)
        result = client.deliver("s@x", ["a@x", "b@x"], reader)  # type: ignore[arg-type]
    assert {str(r) for r in result.replies.values()} == {"250 2.1.5 Ok"}
    assert reader.max_read <= 64 * 1024
    (session,) = server.sessions
    assert session.commands[1] == f"MAIL FROM:<s@x> SIZE={size}"
    assert session.wire_ok
    (received,) = session.messages
    assert len(received) == size
    assert hashlib.sha256(received).hexdigest() == digest.hexdigest()


def test_message_file_failing_mid_data_drops_the_connection(
    serve: Serve,
) -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            raise OSError("disk on fire")

    server = serve()
    client = LmtpClient(server.address, timeouts=FAST)
    with pytest.raises(OSError, match="disk on fire"):
        client.deliver("s@x", ["a@x"], Broken(), size=10, eight_bit=False)  # type: ignore[arg-type]
    assert not client.connected
    time.sleep(0.1)
    assert server.sessions[0].messages == []
