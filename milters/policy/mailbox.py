"""Does a user's Cyrus mailbox exist? Asked of Cyrus lmtpd itself, and cached.

The authoritative, cheap question is an LMTP probe: LHLO, `MAIL FROM:<>`, `RCPT TO:<user>`,
then RSET; lmtpd answers 250 for an existing mailbox and `550 5.1.1` for a missing one,
without any message being sent. lmtp_bridge's `LmtpClient.probe` does exactly that. Answers
are cached with separate TTLs: a positive answer stays true for long (mailboxes are rarely
deleted), a negative one must expire soon, because the user may log in (creating the mailbox)
at any moment.

A member whose directory entry names a mailstore of its own (the route attribute, e.g.
`mailHost`, as the milter's delivery reads it) is probed at that store, not the default one:
asking the wrong Cyrus would refuse every member who lives elsewhere.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from lmtp_bridge import (
    BackendAddressError,
    BackendUnavailable,
    LmtpClient,
    MailAddressError,
    Timeouts,
    mail_host_backend,
    parse_backend_address,
)
from milters.common.directory import User
from milters.common.sockets import Address
from milters.policy.config import MailboxConfig

__all__ = [
    "LmtpProbe",
    "LmtpProbes",
    "MailboxCache",
    "MailboxChecker",
    "MailboxFull",
    "MailboxUnavailable",
    "probe_recipient",
]


class MailboxUnavailable(Exception):
    """Cyrus could not say whether the mailbox exists (down, slow, 4xx, protocol error)."""


class MailboxFull(Exception):
    """The mailbox exists and is over its quota (Cyrus: `452 4.2.2 Over quota`)."""


def probe_recipient(template: str, user: User, address: str) -> str:
    """The LMTP recipient naming the user's mailbox, from the `probe_recipient` template."""
    local, _, domain = address.rpartition("@")
    return template.format(uid=user.uid, address=address, local=local, domain=domain)


class LmtpProbe:
    """Probes over lmtp_bridge's client, one held-open connection per worker thread.

    `LmtpClient` is not thread-safe, so each thread gets its own; the connection is reused
    (RSET proves it alive), which makes a probe a few hundred microseconds on a unix socket.
    """

    def __init__(self, address: Address, helo: str, timeout: float) -> None:
        self.address = parse_backend_address(str(address))
        self.helo = helo
        self.timeouts = Timeouts(connect=timeout, command=timeout, data=timeout, final=timeout)
        self.timeout = timeout
        self._local = threading.local()
        self._clients: list[LmtpClient] = []
        self._lock = threading.Lock()

    def _client(self) -> LmtpClient:
        client: LmtpClient | None = getattr(self._local, "client", None)
        if client is None:
            client = LmtpClient(self.address, lhlo_name=self.helo, timeouts=self.timeouts)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def probe(self, recipient: str) -> bool:
        try:
            reply = self._client().probe(recipient, deadline=time.monotonic() + self.timeout)
        except MailAddressError:
            return False  # no mailbox can be named like that; nothing was sent
        except BackendUnavailable as exc:
            raise MailboxUnavailable(str(exc)) from exc
        if reply.is_positive:
            return True
        if reply.code == 550 or reply.enhanced == "5.1.1":
            return False
        if reply.enhanced in ("4.2.2", "5.2.2"):
            raise MailboxFull(str(reply))
        raise MailboxUnavailable(f"{self.address}: RCPT TO:<{recipient}> answered {reply}")

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()  # may race a probe in flight on reload; the probe then reconnects


class LmtpProbes:
    """One LmtpProbe per mailstore, made at first use (the default store, and each mailHost)."""

    def __init__(self, helo: str, timeout: float) -> None:
        self.helo = helo
        self.timeout = timeout
        self._probes: dict[Address, LmtpProbe] = {}
        self._lock = threading.Lock()

    def probe(self, backend: Address, recipient: str) -> bool:
        with self._lock:
            lmtp = self._probes.get(backend)
            if lmtp is None:
                lmtp = self._probes[backend] = LmtpProbe(backend, self.helo, self.timeout)
        return lmtp.probe(recipient)

    def close(self) -> None:
        with self._lock:
            probes, self._probes = list(self._probes.values()), {}
        for lmtp in probes:
            lmtp.close()


class MailboxCache:
    """Bounded LRU of answers with a TTL per polarity; TTL 0 disables that polarity."""

    def __init__(
        self,
        positive_ttl: float,
        negative_ttl: float,
        max_size: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.positive_ttl = positive_ttl
        self.negative_ttl = negative_ttl
        self.max_size = max_size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bool]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bool | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, exists = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return exists

    def put(self, key: str, exists: bool) -> None:
        ttl = self.positive_ttl if exists else self.negative_ttl
        if ttl <= 0 or self.max_size <= 0:
            return
        self._entries[key] = (self._clock() + ttl, exists)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)


class MailboxChecker:
    """Thread-safe front: cache, then probe; outages are never cached."""

    def __init__(
        self,
        config: MailboxConfig,
        probe: Callable[[Address, str], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._lmtp: LmtpProbes | None = None
        if probe is None:
            self._lmtp = LmtpProbes(config.helo, config.timeout)
            probe = self._lmtp.probe
        self._probe = probe
        self._cache = MailboxCache(
            config.positive_ttl, config.negative_ttl, config.cache_size, clock
        )
        self._lock = threading.Lock()

    def exists(self, user: User, address: str) -> tuple[bool, bool]:
        """(exists, answered from cache). Raises MailboxUnavailable, or MailboxFull (never
        cached: the user may make room at any moment)."""
        backend = self.store(user)
        recipient = probe_recipient(self.config.probe_recipient, user, address).lower()
        key = f"{backend} {recipient}"
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached, True
        exists = self._probe(backend, recipient)
        with self._lock:
            self._cache.put(key, exists)
        return exists, False

    def store(self, user: User) -> Address:
        """The user's own mailstore when the directory names one, else the default."""
        if user.route is None:
            return self.config.lmtp
        try:
            return mail_host_backend(user.route)
        except BackendAddressError as exc:
            problem = f"{user.uid}: unusable mailstore {user.route!r}: {exc}"
            raise MailboxUnavailable(problem) from exc

    def close(self) -> None:
        if self._lmtp is not None:
            self._lmtp.close()
