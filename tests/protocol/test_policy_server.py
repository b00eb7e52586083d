"""The policy server over real sockets, with fake directory and mailbox backends.

Fakes are fine at this layer: what is tested is the protocol shell (framing over tiny reads,
many requests per connection, safe answers to garbage, timeouts, logging, shutdown, reload).
The last tests run `mailglue policy` as a real process to check the signals.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from milters.common.directory import User
from milters.common.jsonlog import EventLog
from milters.common.ldapconn import DirectoryUnavailable
from milters.common.listmap import ListMap
from milters.policy.config import PolicyConfig, RateLimitConfig, RateLimits, parse_policy_config
from milters.policy.lookups import Backends, MailingLists
from milters.policy.mailbox import MailboxFull
from milters.policy.metrics import PolicyMetrics
from milters.policy.server import PolicyServer

USERS = {
    "alice": User("alice", ("alice@example.org", "alice.liddell@example.org")),
    "bob": User("bob", ("bob@example.org",)),
    "carol": User("carol", ("carol@example.org",)),
    "frank": User("frank", ("frank@example.org",)),
}
MAILBOXES = {"alice", "bob"}  # carol has never logged in
FULL_MAILBOXES = {"frank"}  # over quota
ALIASES = {
    "postmaster@example.org": ("alice@example.org",),
    "team@example.org": ("alice@example.org", "carol@example.org", "friend@elsewhere.test"),
    "nobody-home@example.org": ("carol@example.org", "ghost@example.org"),
    "full-house@example.org": ("frank@example.org", "carol@example.org"),
    "ring@example.org": ("ring2@example.org",),
    "ring2@example.org": ("ring@example.org",),
}


class FakeDirectory:
    def __init__(self) -> None:
        self.down = False
        self.delay = 0.0

    def _check(self) -> None:
        if self.delay:
            time.sleep(self.delay)
        if self.down:
            raise DirectoryUnavailable("ldap://fake: SERVER_DOWN")

    def find_by_address(self, address: str) -> User | None:
        self._check()
        return next((u for u in USERS.values() if address in u.addresses), None)

    def find_by_login(self, login: str) -> User | None:
        self._check()
        return USERS.get(login)

    def alias_members(self, address: str) -> tuple[str, ...] | None:
        self._check()
        return ALIASES.get(address)

    def close(self) -> None:
        pass


class FakeMailboxes:
    def exists(self, user: User, address: str) -> tuple[bool, bool]:
        if user.uid in FULL_MAILBOXES:
            raise MailboxFull("452 4.2.2 Over quota")
        return user.uid in MAILBOXES, False

    def close(self) -> None:
        pass


def config_for(tmp_path: Path, **changes: object) -> PolicyConfig:
    data = {
        "policy": {
            "listen": f"unix:{tmp_path / 'policy.sock'}",
            "local_domains": ["example.org"],
            "recipient_delimiter": "+",
            "decision_timeout": 1,
        },
        "ldap": {"base": "dc=example,dc=org"},
        "rate_limits": {"sasl_user": {"messages": 0}},
    }
    return replace(parse_policy_config("test.yaml", data), **changes)  # type: ignore[arg-type]


def request(**attrs: str) -> bytes:
    base = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": "192.0.2.1",
        "sender": "x@elsewhere.test",
        "recipient": "alice@example.org",
        "queue_id": "",
        "instance": "1.2.3",
        "sasl_username": "",
    }
    base.update(attrs)
    return "".join(f"{k}={v}\n" for k, v in base.items()).encode() + b"\n"


class Harness:
    def __init__(self, server: PolicyServer, log: io.StringIO, directory: FakeDirectory) -> None:
        self.server = server
        self.log = log
        self.directory = directory

    def events(self, kind: str = "policy_decision") -> list[dict[str, object]]:
        lines = [json.loads(line) for line in self.log.getvalue().splitlines()]
        return [e for e in lines if e["event"] == kind]

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        listen = self.server.config.listen
        if listen.startswith("unix:"):
            return await asyncio.open_unix_connection(listen[5:])
        host, port = listen[5:].rsplit(":", 1)
        return await asyncio.open_connection(host, int(port))


@asynccontextmanager
async def running(
    config: PolicyConfig, metrics: PolicyMetrics | None = None, lists: ListMap | None = None
) -> AsyncIterator[Harness]:
    stream = io.StringIO()
    directory = FakeDirectory()
    server = PolicyServer(
        config,
        EventLog(stream=stream),
        lambda _c, _log: Backends(
            directory, FakeMailboxes(), MailingLists(lists) if lists is not None else None
        ),
        metrics=metrics,
    )
    await server.start()
    serving = asyncio.create_task(server.serve_until_stopped())
    try:
        yield Harness(server, stream, directory)
    finally:
        server.stop()
        await asyncio.wait_for(serving, 20)


async def read_reply(reader: asyncio.StreamReader) -> str:
    data = await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
    assert data.startswith(b"action=")
    return data[len(b"action=") : -2].decode()


async def ask(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, data: bytes) -> str:
    writer.write(data)
    await writer.drain()
    return await read_reply(reader)


def run_async(test: Callable[[], object]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


# --- the decision table through the wire -----------------------------------------------------

CASES = [
    ({}, "DUNNO"),
    ({"recipient": "alice+tag@example.org"}, "DUNNO"),
    ({"recipient": "Alice.Liddell@example.org"}, "DUNNO"),
    # Postfix writes "<address>: Recipient address rejected: " before the text itself.
    ({"recipient": "nobody@example.org"}, "550 5.1.1 no such user"),
    (
        {"recipient": "carol@example.org"},
        "550 5.1.1 mailbox not yet created (the user has never logged in)",
    ),
    ({"recipient": "someone@elsewhere.test"}, "DUNNO"),
    (
        {"sasl_username": "alice", "sender": "bob@example.org"},
        "553 5.7.1 not owned by user alice: log in as its owner to send as it",
    ),
    ({"sasl_username": "alice", "sender": "alice@example.org"}, "DUNNO"),
    ({"recipient": "frank@example.org"}, "452 4.2.2 mailbox full, try again later"),
    ({"recipient": "full-house@example.org"}, "452 4.2.2 mailbox full, try again later"),
    # aliases: postmaster must always be accepted; some members suffice; none do not
    ({"recipient": "postmaster@example.org"}, "DUNNO"),
    ({"recipient": "Postmaster+x@example.org"}, "DUNNO"),
    ({"recipient": "team@example.org"}, "DUNNO"),
    (
        {"recipient": "nobody-home@example.org"},
        "550 5.1.1 alias has no member who can receive mail",
    ),
    (
        {"recipient": "ring@example.org"},
        "550 5.4.6 alias misconfigured (loop: ring@example.org -> ring2@example.org -> "
        "ring@example.org); postmaster has been told in the log",
    ),
    # sending as an alias one is a member of, not as someone else's
    ({"sasl_username": "alice", "sender": "postmaster@example.org"}, "DUNNO"),
    (
        {"sasl_username": "bob", "sender": "postmaster@example.org"},
        "553 5.7.1 not owned by user bob: log in as its owner to send as it",
    ),
    (
        {"sasl_username": "bob", "sender": ""},
        "553 5.7.1 a null sender (MAIL FROM:<>) is not accepted from a logged-in user",
    ),
    (
        {"sender": "ceo@example.org", "recipient": "bob@example.org"},
        "553 5.7.1 this is an address of ours: log in (submission, port 587) to send as it",
    ),
    ({"sender": "", "recipient": "bob@example.org"}, "DUNNO"),  # bounces from outside
    # policy_context: each restriction list asks only its own question
    (
        {"sender": "ceo@example.org", "recipient": "x@example.org", "policy_context": "sender"},
        "553 5.7.1 this is an address of ours: log in (submission, port 587) to send as it",
    ),
    ({"sender": "ceo@example.org", "policy_context": "recipient"}, "DUNNO"),
    ({"recipient": "nobody@example.org", "policy_context": "sender"}, "DUNNO"),
    ({"recipient": "*@example.org"}, None),  # injection-looking input: just "no such user"
]


def test_many_requests_on_one_connection_in_one_byte_writes(tmp_path: Path) -> None:
    async def test() -> None:
        async with running(config_for(tmp_path)) as h:
            reader, writer = await h.connect()
            for attrs, expected in CASES:
                data = request(**attrs)
                for i in range(len(data)):
                    writer.write(data[i : i + 1])
                    await writer.drain()
                reply = await read_reply(reader)
                if expected is None:
                    assert reply.startswith("550 5.1.1")
                else:
                    assert reply == expected
            writer.close()
        assert len(h.events()) == len(CASES)

    run_async(test)


def test_pipelined_requests_in_one_write_get_replies_in_order(tmp_path: Path) -> None:
    async def test() -> None:
        async with running(config_for(tmp_path)) as h:
            reader, writer = await h.connect()
            writer.write(b"".join(request(recipient=f"{u}@example.org") for u in USERS))
            replies = [await read_reply(reader) for _ in USERS]
            assert replies[:2] == ["DUNNO", "DUNNO"]
            assert "never logged in" in replies[2]
            writer.close()

    run_async(test)


def test_tcp_listener(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def test() -> None:
        async with running(config_for(tmp_path, listen=f"inet:127.0.0.1:{port}")) as h:
            reader, writer = await h.connect()
            assert await ask(writer, reader, request()) == "DUNNO"
            writer.close()

    run_async(test)


@pytest.mark.parametrize(
    "garbage",
    [b"this is not a policy request\n", b"x=" + b"A" * 20000, b"\n", b"a=1\na=2\n\n"],
)
def test_malformed_gets_safe_answer_and_close(tmp_path: Path, garbage: bytes) -> None:
    async def test() -> None:
        async with running(config_for(tmp_path)) as h:
            reader, writer = await h.connect()
            assert await ask(writer, reader, request()) == "DUNNO"
            writer.write(garbage)
            reply = await read_reply(reader)
            assert reply == "DEFER_IF_PERMIT 4.3.0 malformed policy request"
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
            (error,) = h.events("policy_protocol_error")
            assert error["error"]
            # the server itself is fine
            reader, writer = await h.connect()
            assert await ask(writer, reader, request()) == "DUNNO"
            writer.close()

    run_async(test)


def test_mailman_list_addresses_are_known_recipients(tmp_path: Path) -> None:
    """A list address (and its VERP bounce address) passes without asking LDAP, so list mail
    flows while the directory is down; other unknown addresses are still refused."""
    lists_map = tmp_path / "postfix_lmtp"
    lists_map.write_text(
        "staff@example.org lmtp:[127.0.0.1]:8024\nstaff-bounces@example.org lmtp:[127.0.0.1]:8024\n"
    )

    async def test() -> None:
        async with running(config_for(tmp_path), lists=ListMap(str(lists_map))) as h:
            reader, writer = await h.connect()
            assert await ask(writer, reader, request(recipient="Staff@example.org")) == "DUNNO"
            verp = "staff-bounces+alice=example.net@example.org"
            assert await ask(writer, reader, request(recipient=verp)) == "DUNNO"
            refused = await ask(writer, reader, request(recipient="staff-typo@example.org"))
            assert refused == "550 5.1.1 no such user"
            h.directory.down = True
            assert await ask(writer, reader, request(recipient="staff@example.org")) == "DUNNO"
            writer.close()
        assert [e["reason"] for e in h.events()][:2] == ["mailing_list", "mailing_list"]

    run_async(test)


def test_ldap_outage_defers_never_dunno(tmp_path: Path) -> None:
    async def test() -> None:
        async with running(config_for(tmp_path)) as h:
            h.directory.down = True
            reader, writer = await h.connect()
            reply = await ask(writer, reader, request())
            assert reply.startswith("DEFER_IF_PERMIT 4.4.3 recipient address verification")
            reply = await ask(writer, reader, request(sasl_username="alice", recipient="x@y.z"))
            assert reply.startswith("DEFER_IF_PERMIT 4.4.3")
            h.directory.down = False
            assert await ask(writer, reader, request()) == "DUNNO"
            writer.close()
        first = h.events()[0]
        assert first["reason"] == "ldap_unavailable"
        assert "SERVER_DOWN" in str(first["detail"])

    run_async(test)


def test_slow_backend_times_out_with_defer(tmp_path: Path) -> None:
    async def test() -> None:
        async with running(config_for(tmp_path, decision_timeout=0.2)) as h:
            h.directory.delay = 1.0
            reader, writer = await h.connect()
            started = time.monotonic()
            reply = await ask(writer, reader, request())
            assert time.monotonic() - started < 0.9
            assert reply.startswith("DEFER_IF_PERMIT 4.4.3 policy lookup timed out")
            h.directory.delay = 0
            writer.close()

    run_async(test)


def test_log_event_fields(tmp_path: Path) -> None:
    async def test() -> None:
        async with running(config_for(tmp_path)) as h:
            reader, writer = await h.connect()
            await ask(
                writer,
                reader,
                request(
                    queue_id="4ABC123",
                    recipient="nobody@example.org",
                    sasl_username="alice",
                    sender="alice@example.org",
                    client_address="198.51.100.9",
                ),
            )
            writer.close()
        (event,) = h.events()
        assert event["queue_id"] == "4ABC123"
        assert event["client_address"] == "198.51.100.9"
        assert event["sender"] == "alice@example.org"
        assert event["recipient"] == "nobody@example.org"
        assert event["sasl_username"] == "alice"
        assert event["decision"] == "reject"
        assert event["reason"] == "no_such_user"
        assert str(event["action"]).startswith("550 5.1.1")
        assert isinstance(event["latency_ms"], float)

    run_async(test)


def test_rate_limit_n_plus_one_message(tmp_path: Path) -> None:
    limits = RateLimitConfig(window=3600, sasl_user=RateLimits(messages=3))

    async def test() -> None:
        async with running(config_for(tmp_path, rate_limits=limits)) as h:
            reader, writer = await h.connect()
            sub = {"sasl_username": "bob", "sender": "bob@example.org"}
            for n in range(3):  # three messages, two recipients each
                for rcpt in ("alice@example.org", "x@elsewhere.test"):
                    assert (
                        await ask(writer, reader, request(instance=f"m{n}", recipient=rcpt, **sub))
                        == "DUNNO"
                    )
            reply = await ask(writer, reader, request(instance="m3", **sub))
            assert reply.startswith("450 4.7.1 Rate limit exceeded for user bob")
            # another login is not affected; a refusal for another reason is not counted
            other = {"sasl_username": "alice", "sender": "alice@example.org"}
            assert await ask(writer, reader, request(instance="a1", **other)) == "DUNNO"
            writer.close()

    run_async(test)


def test_shutdown_finishes_in_flight_request_and_stops_accepting(tmp_path: Path) -> None:
    async def test() -> None:
        async with running(config_for(tmp_path)) as h:
            h.directory.delay = 0.5
            busy_reader, busy_writer = await h.connect()
            idle_reader, _idle_writer = await h.connect()
            busy_writer.write(request())
            await busy_writer.drain()
            await asyncio.sleep(0.1)  # the request is now in a worker thread
            h.server.stop()
            assert await read_reply(busy_reader) == "DUNNO"
            assert await asyncio.wait_for(busy_reader.read(), 5) == b""
            assert await asyncio.wait_for(idle_reader.read(), 5) == b""
            await asyncio.sleep(0.1)
            with pytest.raises(OSError):
                await h.connect()

    run_async(test)


def test_reload_applies_good_config_and_refuses_bad(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"policy: {{listen: 'unix:{tmp_path / 'p.sock'}', local_domains: [example.org]}}\n"
        "ldap: {base: dc=x}\n"
    )

    async def test() -> None:
        from milters.policy.config import load_policy_config

        async with running(load_policy_config(path)) as h:
            reader, writer = await h.connect()
            assert await ask(writer, reader, request(recipient="zed@example.net")) == "DUNNO"
            path.write_text(path.read_text().replace("[example.org]", "[example.org, example.net]"))
            assert h.server.reload()
            reply = await ask(writer, reader, request(recipient="zed@example.net"))
            assert reply == "550 5.1.1 no such user"  # same connection, new rules
            path.write_text("policy: {local_domains: []}\n")
            assert not h.server.reload()
            reply = await ask(writer, reader, request(recipient="zed@example.net"))
            assert reply.startswith("550 5.1.1")  # old config kept
            (failed,) = h.events("config_reload_failed")
            assert "policy.local_domains" in str(failed["problems"])
            writer.close()

    run_async(test)


# --- the real process: signals ---------------------------------------------------------------


def _ask_sync(path: Path, data: bytes) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(data)
        buf = b""
        while not buf.endswith(b"\n\n"):
            chunk = s.recv(4096)
            assert chunk, "closed before a reply"
            buf += chunk
    return buf.decode()[len("action=") : -2]


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        if path.exists():
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(path))
                return
            except OSError:
                pass
        time.sleep(0.05)
    raise AssertionError("policy service did not start")


def test_process_sighup_reload_and_sigterm_exit(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on: LDAP is "down"
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    sock = tmp_path / "policy.sock"
    log = tmp_path / "policy.log"
    path = tmp_path / "policy.yaml"
    text = (
        f"policy: {{listen: 'unix:{sock}', local_domains: [example.org]}}\n"
        f"ldap: {{uri: 'ldap://127.0.0.1:{dead_port}/', base: 'dc=x', timeout: 1,"
        " bind_dn: 'cn=x', bind_password: 'never-log-me'}\n"
        f"log: {{file: '{log}'}}\n"
    )
    path.write_text(text)
    mailglue = Path(sys.executable).with_name("mailglue")
    proc = subprocess.Popen(
        [str(mailglue), "policy", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_socket(sock, proc)
        reply = _ask_sync(sock, request())
        assert reply.startswith("DEFER_IF_PERMIT 4.4.3 recipient address verification")
        assert _ask_sync(sock, request(recipient="x@example.net")) == "DUNNO"
        path.write_text(text.replace("[example.org]", "[example.org, example.net]"))
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "config_reloaded" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _ask_sync(sock, request(recipient="x@example.net")).startswith("DEFER_IF_PERMIT")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events[0] == "policy_started" and events[-1] == "policy_stopped"
    assert "config_reloaded" in events
    assert "never-log-me" not in log.read_text()


def test_process_tells_systemd_ready_reloading_stopping(tmp_path: Path) -> None:
    """Type=notify: READY=1 only once the socket listens; RELOADING=1/READY=1 around SIGHUP."""
    sock = tmp_path / "policy.sock"
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"policy: {{listen: 'unix:{sock}', local_domains: [example.org]}}\n"
        "ldap: {uri: 'ldap://127.0.0.1:9/', base: 'dc=x', timeout: 1,"
        " bind_dn: 'cn=x', bind_password: 'x'}\n"
        f"log: {{file: '{tmp_path / 'policy.log'}'}}\n"
    )
    notify = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify))
        listener.settimeout(15)
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mailglue")), "policy", "--config", str(path)],
            env=dict(os.environ, NOTIFY_SOCKET=str(notify)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert listener.recv(4096) == b"READY=1"
            assert sock.exists()  # it said ready after it listened, not before
            os.kill(proc.pid, signal.SIGHUP)
            assert listener.recv(4096) == b"RELOADING=1"
            assert listener.recv(4096) == b"READY=1"
            os.kill(proc.pid, signal.SIGTERM)
            assert listener.recv(4096) == b"STOPPING=1"
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_threads_do_not_leak_between_servers(tmp_path: Path) -> None:
    before = threading.active_count()

    async def test() -> None:
        async with running(config_for(tmp_path)) as h:
            reader, writer = await h.connect()
            assert await ask(writer, reader, request()) == "DUNNO"
            writer.close()

    run_async(test)
    time.sleep(0.2)
    assert threading.active_count() <= before + 1


def test_metrics_count_each_decision(tmp_path: Path) -> None:
    metrics = PolicyMetrics()

    async def test() -> None:
        async with running(config_for(tmp_path), metrics) as h:
            reader, writer = await h.connect()
            await ask(writer, reader, request(recipient="nobody@example.org"))
            await ask(writer, reader, request(recipient="nobody@example.org"))
            await ask(writer, reader, request())
            writer.close()

    run_async(test)
    samples = {
        (s.labels["decision"], s.labels["reason"]): s.value
        for family in metrics.registry.collect()
        if family.name == "mailglue_policy_decisions"
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert sum(samples.values()) == 3
    rejects = [v for (decision, _), v in samples.items() if decision == "reject"]
    assert rejects == [2.0]
