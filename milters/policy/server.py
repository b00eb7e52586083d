"""The asyncio shell: sockets, worker threads, signals; every rule lives in the pure modules.

One connection serves many requests (Postfix keeps policy connections open). LDAP and LMTP
calls block, so they run in a thread pool, bounded by `decision_timeout`: a hung backend costs
a DEFER_IF_PERMIT, never a hung Postfix. A protocol violation gets a safe DEFER_IF_PERMIT and
the connection is closed, because the byte stream can no longer be trusted.

Signals: SIGTERM/SIGINT stop accepting, let in-flight requests finish, then exit; SIGHUP
re-reads the config, and a bad one is logged and refused while the old one stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from milters.common.configkit import ConfigError
from milters.common.directory import LdapDirectory
from milters.common.jsonlog import EventLog
from milters.common.lifecycle import sd_notify
from milters.common.listmap import ListMap
from milters.common.mailman import MailmanRest
from milters.common.prometheus import serve as serve_metrics
from milters.common.sockets import UnixAddress, parse_address
from milters.policy.aliases import MAX_DEPTH, Expansion
from milters.policy.config import PolicyConfig, load_policy_config
from milters.policy.decide import Decision, Facts, apply_rate, decide, plan, rate_key
from milters.policy.lookups import AliasRules, Backends, Gathered, MailingLists, gather
from milters.policy.mailbox import MailboxChecker
from milters.policy.metrics import PolicyMetrics
from milters.policy.protocol import PolicyRequest, ProtocolError, RequestParser, encode_reply
from milters.policy.ratelimit import RateLimiter
from milters.policy.rosters import Rosters

__all__ = ["PolicyServer", "default_backends", "run"]

MALFORMED = "DEFER_IF_PERMIT 4.3.0 malformed policy request"
TIMEOUT = Decision("DEFER_IF_PERMIT 4.4.3 policy lookup timed out, try again later", "timeout")
INTERNAL = Decision("DEFER_IF_PERMIT 4.3.0 internal policy error, try again later", "error")
SHUTDOWN_GRACE = 15.0
UNIX_SOCKET_MODE = 0o666  # Postfix's smtpd (user postfix) must connect; protect the directory

BackendsFactory = Callable[[PolicyConfig, EventLog], Backends]


def default_backends(config: PolicyConfig, log: EventLog) -> Backends:
    directory = LdapDirectory(config.ldap, config.mailbox.route_attribute, config.aliases)
    lists = None
    if config.lists is not None:

        def lists_map_problem(message: str) -> None:
            log.emit("lists.map_problem", message=message)

        api = config.lists.mailman
        rosters = None
        if api is not None and api.password is not None:
            rest = MailmanRest(api.rest_url, api.user, api.password, api.timeout)
            rosters = Rosters(rest, config.lists.roster_ttl)
        lists = MailingLists(
            ListMap(config.lists.map, lists_map_problem),
            frozenset(config.lists.members_only),
            rosters,
        )
    return Backends(directory, MailboxChecker(config.mailbox), lists)


def verdict(action: str) -> str:
    """One word for jq: pass, reject or defer."""
    if action == "DUNNO":
        return "pass"
    return "reject" if action.startswith("5") else "defer"


@dataclass
class _Connection:
    writer: asyncio.StreamWriter
    busy: bool = False


@dataclass(frozen=True)
class _State:
    """Everything a reload replaces, swapped as one value so a request sees one config."""

    config: PolicyConfig
    backends: Backends


class PolicyServer:
    def __init__(
        self,
        config: PolicyConfig,
        log: EventLog,
        backends_factory: BackendsFactory = default_backends,
        clock: Callable[[], float] = time.monotonic,
        metrics: PolicyMetrics | None = None,
    ) -> None:
        self._factory = backends_factory
        self.metrics = metrics
        self._state = _State(config, backends_factory(config, log))
        self.log = log
        self._clock = clock
        rl = config.rate_limits
        self.limiter = RateLimiter(rl.window, rl.max_keys, clock)
        self._executor = ThreadPoolExecutor(config.workers, thread_name_prefix="policy")
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._stopping = asyncio.Event()

    @property
    def config(self) -> PolicyConfig:
        return self._state.config

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        address = parse_address(self.config.listen)
        if isinstance(address, UnixAddress):
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(address.path).st_mode):
                    os.unlink(address.path)  # stale socket of a previous run
            self._server = await asyncio.start_unix_server(self._serve, path=address.path)
            os.chmod(address.path, UNIX_SOCKET_MODE)
        else:
            self._server = await asyncio.start_server(
                self._serve, host=address.host, port=address.port
            )
        self.log.emit("policy_started", listen=self.listen_address, config=self.config.source)

    @property
    def listen_address(self) -> str:
        """The bound address (with the real port when the config asked for port 0)."""
        if self._server is None or not self._server.sockets:
            return self.config.listen
        name = self._server.sockets[0].getsockname()
        if isinstance(name, tuple):
            return f"inet:{name[0]}:{name[1]}"
        return f"unix:{name}"

    async def serve_until_stopped(self) -> None:
        await self._stopping.wait()
        await self._shutdown()

    def stop(self) -> None:
        self._stopping.set()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()  # stop accepting
        for conn in self._connections.values():
            if not conn.busy:
                conn.writer.close()  # idle: wakes its reader with EOF
        tasks = list(self._connections)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
            for task in pending:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._state.backends.close()
        self.log.emit("policy_stopped", listen=self.config.listen)

    def reload(self) -> bool:
        """Re-read the config file; keep the old config if the new one is refused."""
        old = self._state
        try:
            config = load_policy_config(old.config.source)
        except ConfigError as exc:
            self.log.emit("config_reload_failed", config=old.config.source, problems=exc.problems)
            return False
        if config.listen != old.config.listen or config.workers != old.config.workers:
            self.log.emit(
                "config_reload_warning",
                config=config.source,
                message="listen and workers change only at restart; keeping the old ones",
            )
        if config.log_file != old.config.log_file:
            self.log.close()
            self.log = EventLog(config.log_file)
        self._state = _State(config, self._factory(config, self.log))
        self.limiter.reconfigure(config.rate_limits.window, config.rate_limits.max_keys)
        old.backends.close()
        self.log.emit("config_reloaded", config=config.source)
        return True

    # --- connections -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = _Connection(writer)
        self._connections[task] = conn
        config = self.config
        parser = RequestParser(config.max_request_bytes, config.max_attributes)
        try:
            while not self._stopping.is_set():
                data = await reader.read(64 * 1024)
                if not data:
                    break
                conn.busy = True
                try:
                    requests = parser.feed(data)
                except ProtocolError as exc:
                    self.log.emit("policy_protocol_error", peer=_peer(writer), error=str(exc))
                    writer.write(encode_reply(MALFORMED))
                    await writer.drain()
                    break
                for request in requests:
                    writer.write(encode_reply(await self.answer(request)))
                await writer.drain()
                conn.busy = parser.has_partial
        except (ConnectionError, OSError):
            pass  # the peer went away; nothing is owed to it
        finally:
            del self._connections[task]
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def answer(self, request: PolicyRequest) -> str:
        """Decide one request and log it; never raises."""
        start = self._clock()
        state = self._state
        config = state.config
        delimiter = config.recipient_delimiter
        wanted = plan(request, config.local_domains, delimiter, config.senders)
        gathered = Gathered(Facts())
        detail: str | None = None
        try:
            if wanted.login is not None or wanted.recipient is not None:
                loop = asyncio.get_running_loop()
                rules = AliasRules(
                    config.local_domains,
                    config.aliases.max_depth if config.aliases else MAX_DEPTH,
                )
                job = functools.partial(gather, wanted, state.backends, rules)
                gathered = await asyncio.wait_for(
                    loop.run_in_executor(self._executor, job), config.decision_timeout
                )
            decision = decide(request, wanted, gathered.facts)
            key = rate_key(request, config.rate_limits) if decision.passes else None
            if key is not None:
                exceeded = self.limiter.hit(key[0], key[1], request.get("instance", ""))
                decision = apply_rate(decision, exceeded)
        except TimeoutError:
            decision = TIMEOUT
        except Exception as exc:
            decision, detail = INTERNAL, f"{type(exc).__name__}: {exc}"
        outages = gathered.outages
        record = self.log.emit(
            "policy_decision",
            queue_id=request.get("queue_id") or None,
            instance=request.get("instance") or None,
            protocol_state=request.get("protocol_state") or None,
            policy_context=request.get("policy_context") or None,
            client_address=request.get("client_address") or None,
            client_name=request.get("client_name") or None,
            sender=request.get("sender"),
            recipient=request.get("recipient") or None,
            sasl_username=request.get("sasl_username") or None,
            decision=verdict(decision.action),
            action=decision.action,
            reason=decision.reason,
            detail=detail or ("; ".join(outages) if outages else None),
            mailbox_cached=gathered.mailbox_cached,
            alias=alias_summary(gathered.facts),
            latency_ms=round((self._clock() - start) * 1000, 3),
        )
        if self.metrics is not None:
            self.metrics.observe(record)
        return decision.action


def alias_summary(facts: Facts) -> dict[str, object] | None:
    """For the log: where an alias recipient leads, and which members can take mail."""
    alias = facts.recipient_alias
    if not isinstance(alias, Expansion):
        return None
    if alias.problem is not None:
        return {"problem": alias.problem}
    return {
        "deliverable": [m.address for m in facts.members if m.deliverable],
        "not_deliverable": [m.address for m in facts.members if not m.deliverable],
        "remote": list(alias.remote),
    }


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return str(peer) if peer else "unix"


async def serve(config: PolicyConfig, backends_factory: BackendsFactory = default_backends) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads."""
    metrics = None
    if config.metrics_listen is not None:
        metrics = PolicyMetrics()
        serve_metrics(config.metrics_listen, metrics.registry)
    server = PolicyServer(config, EventLog(config.log_file), backends_factory, metrics=metrics)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        sd_notify("STOPPING=1")
        server.stop()

    def reload() -> None:
        sd_notify("RELOADING=1")
        server.reload()
        sd_notify("READY=1")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, reload)
    await server.start()
    # Type=notify under systemd: units ordered after this one start once it listens.
    sd_notify("READY=1")
    await server.serve_until_stopped()


def run(config: PolicyConfig) -> None:
    """Entry point of `mailglue policy`."""
    asyncio.run(serve(config))
