"""The scan milter's config file (YAML), loaded into typed, validated objects.

Every key has a default that is safe on a single host; see README.md "Configuration" for the
reference. Problems are collected and reported together, each naming the file and the key.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from milters.auth.check import nameserver
from milters.auth.results import DMARC_ACTIONS
from milters.common.addresses import normal_domain
from milters.common.configkit import ConfigReader, load_yaml, log_file, metrics_address
from milters.common.ldapconfig import LdapConfig, read_ldap
from milters.common.sockets import (
    Address,
    BackendAddressError,
    InetAddress,
    UnixAddress,
    parse_address,
)

FAILURE_POLICIES = ("tempfail", "accept")
OVERSIZE_POLICIES = ("reject", "tempfail", "accept")


@dataclass(frozen=True)
class SpamConfig:
    backends: tuple[Address, ...] = (InetAddress("127.0.0.1", 783),)
    timeout: float = 60.0
    tag_above: Decimal = Decimal("3.0")
    reject_at: Decimal = Decimal("5.0")
    max_size: int = 512 * 1024
    on_failure: str = "tempfail"
    user: str | None = None
    memo_ttl: float = 600.0  # seconds a scan result is reused for the same message; 0 = never
    memo_entries: int = 10000


@dataclass(frozen=True)
class VirusConfig:
    backends: tuple[Address, ...] = (UnixAddress("/run/clamav/clamd.ctl"),)
    timeout: float = 60.0
    max_size: int = 25 * 1024 * 1024
    on_failure: str = "tempfail"
    on_oversize: str = "reject"


DELIVERY_MODES = ("queue", "lmtp")


@dataclass(frozen=True)
class DeliveryConfig:
    """How accepted mail reaches the mailboxes.

    `queue`: Postfix queues it and delivers with its own transport (the classic setup).
    `lmtp`: the milter delivers to Cyrus over LMTP before answering, so the client's 250
    comes only after Cyrus has the message (delivery-confirmed acceptance).
    """

    mode: str = "queue"
    local_domains: tuple[str, ...] = ()
    lmtp_backend: str = "unix:/var/run/cyrus/socket/lmtp"
    domain_backends: dict[str, str] = field(default_factory=dict)
    strict: bool = False
    route_attribute: str | None = None  # per-recipient backend from LDAP, e.g. mailHost
    ldap: LdapConfig | None = None  # users (LMTP now) vs aliases (Postfix), route_attribute
    recipient_delimiter: str = ""  # as Postfix's: `alice+tag@` is looked up as `alice@`
    lists_map: str | None = None  # Mailman's postfix_lmtp: list posts go to Mailman's LMTP now
    connect_timeout: float = 10.0
    command_timeout: float = 30.0
    final_timeout: float = 120.0


@dataclass(frozen=True)
class AuthConfig:
    """SPF, DKIM and DMARC checks of incoming mail (milters/auth)."""

    enabled: bool = True
    authserv_id: str = ""  # "": milter.hostname
    dmarc_reject: str = "reject"  # for p=reject failures: reject | quarantine | ignore
    dmarc_quarantine: str = "quarantine"  # for p=quarantine failures: quarantine | ignore
    nameservers: tuple[str, ...] = ()  # "ip" or "ip:port"; none: /etc/resolv.conf
    timeout: float = 5.0  # per DNS query
    max_size: int = 10 * 1024 * 1024  # larger messages: DKIM is not verified
    # Clients not checked: our own hosts re-sending mail (Sieve redirects, list copies).
    trusted_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")

    def trusts(self, client_addr: str) -> bool:
        """An address in trusted_networks, or none at all (mail submitted on this host)."""
        try:
            addr = ipaddress.ip_address(client_addr.removeprefix("IPv6:"))
        except ValueError:
            return True  # Postfix passes no address for local submissions
        return any(addr in ipaddress.ip_network(n, strict=False) for n in self.trusted_networks)


@dataclass(frozen=True)
class MilterConfig:
    listen: str = "inet:127.0.0.1:8891"
    hostname: str = field(default_factory=socket.getfqdn)
    time_budget: float = 240.0
    keepalive_interval: float = 10.0
    spool_memory_limit: int = 1024 * 1024
    spool_dir: str | None = None
    spam: SpamConfig = field(default_factory=SpamConfig)
    virus: VirusConfig = field(default_factory=VirusConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    log_file: str | None = None
    shadow: bool = False
    metrics_listen: InetAddress | None = None
    shutdown_grace: float | None = None  # None: time_budget
    source: str = "<defaults>"

    @property
    def grace(self) -> float:
        """Seconds a SIGTERM waits for transactions in flight (default: one time budget)."""
        return self.time_budget if self.shutdown_grace is None else self.shutdown_grace


def _addresses(reader: ConfigReader, key: str, default: tuple[Address, ...]) -> tuple[Address, ...]:
    texts = reader.text_list(key, [str(a) for a in default])
    addresses = []
    for text in texts:
        try:
            addresses.append(parse_address(text))
        except BackendAddressError as exc:
            reader.problem(key, str(exc))
    if not texts:
        reader.problem(key, "needs at least one backend")
    return tuple(addresses) or default


def _spam(reader: ConfigReader) -> SpamConfig:
    d = SpamConfig()
    spam = SpamConfig(
        backends=_addresses(reader, "backends", d.backends),
        timeout=reader.seconds("timeout", d.timeout),
        tag_above=reader.decimal("tag_above", d.tag_above),
        reject_at=reader.decimal("reject_at", d.reject_at),
        max_size=reader.integer("max_size", d.max_size, minimum=1024),
        on_failure=reader.choice("on_failure", d.on_failure, FAILURE_POLICIES),
        user=reader.optional_text("user"),
        memo_ttl=reader.seconds("memo_ttl", d.memo_ttl, minimum=0, maximum=86400),
        memo_entries=reader.integer("memo_entries", d.memo_entries, minimum=1),
    )
    if spam.tag_above >= spam.reject_at:
        reader.problem(
            "tag_above",
            f"must be below {reader.key_path('reject_at')} ({spam.reject_at}), "
            f"got {spam.tag_above}: nothing could ever be tagged",
        )
    reader.finish()
    return spam


def _virus(reader: ConfigReader) -> VirusConfig:
    d = VirusConfig()
    virus = VirusConfig(
        backends=_addresses(reader, "backends", d.backends),
        timeout=reader.seconds("timeout", d.timeout),
        max_size=reader.integer("max_size", d.max_size, minimum=1024),
        on_failure=reader.choice("on_failure", d.on_failure, FAILURE_POLICIES),
        on_oversize=reader.choice("on_oversize", d.on_oversize, OVERSIZE_POLICIES),
    )
    reader.finish()
    return virus


def _delivery(reader: ConfigReader) -> DeliveryConfig:
    d = DeliveryConfig()
    delivery = DeliveryConfig(
        mode=reader.choice("mode", d.mode, DELIVERY_MODES),
        local_domains=tuple(normal_domain(x) for x in reader.text_list("local_domains", ())),
        lmtp_backend=reader.text("lmtp_backend", d.lmtp_backend),
        domain_backends={k.lower(): v for k, v in reader.mapping("domain_backends").items()},
        strict=reader.boolean("strict", d.strict),
        route_attribute=reader.optional_text("route_attribute"),
        ldap=read_ldap(reader.section("ldap")) if reader.has("ldap") else None,
        recipient_delimiter=reader.optional_text("recipient_delimiter") or "",
        lists_map=reader.optional_text("lists_map"),
        connect_timeout=reader.seconds("connect_timeout", d.connect_timeout),
        command_timeout=reader.seconds("command_timeout", d.command_timeout),
        final_timeout=reader.seconds("final_timeout", d.final_timeout),
    )
    for key, text in [
        ("lmtp_backend", delivery.lmtp_backend),
        *(("domain_backends", v) for v in delivery.domain_backends.values()),
    ]:
        try:
            parse_address(text)
        except BackendAddressError as exc:
            reader.problem(key, str(exc))
    if delivery.route_attribute and delivery.ldap is None:
        reader.problem("route_attribute", "needs a delivery.ldap section to look it up in")
    if delivery.mode == "lmtp" and not delivery.local_domains:
        reader.problem("local_domains", "mode lmtp needs the domains delivered to Cyrus")
    reader.finish()
    return delivery


def _auth(reader: ConfigReader) -> AuthConfig:
    d = AuthConfig()
    auth = AuthConfig(
        enabled=reader.boolean("enabled", d.enabled),
        authserv_id=reader.optional_text("authserv_id") or "",
        dmarc_reject=reader.choice("dmarc_reject", d.dmarc_reject, DMARC_ACTIONS),
        dmarc_quarantine=reader.choice(
            "dmarc_quarantine", d.dmarc_quarantine, ("quarantine", "ignore")
        ),
        nameservers=reader.text_list("nameservers", d.nameservers),
        timeout=reader.seconds("timeout", d.timeout, minimum=0.1, maximum=60),
        max_size=reader.integer("max_size", d.max_size, minimum=1024),
        trusted_networks=reader.text_list("trusted_networks", d.trusted_networks),
    )
    for server in auth.nameservers:
        try:
            nameserver(server)
        except ValueError:
            reader.problem("nameservers", f"{server!r} is not an IP address with optional :port")
    for network in auth.trusted_networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            reader.problem("trusted_networks", f"{network!r} is not a network (e.g. 10.0.0.0/8)")
    reader.finish()
    return auth


def parse_config(source: str, data: object) -> MilterConfig:
    top = ConfigReader(source, data)
    d = MilterConfig(hostname="")
    milter = top.section("milter")
    listen = milter.text("listen", d.listen)
    try:
        parse_address(listen)
    except BackendAddressError as exc:
        milter.problem("listen", str(exc))
    hostname = milter.optional_text("hostname") or socket.getfqdn()
    time_budget = milter.seconds("time_budget", d.time_budget, minimum=1.0)
    keepalive = milter.seconds("keepalive_interval", d.keepalive_interval, minimum=0.1)
    if keepalive >= time_budget:
        milter.problem("keepalive_interval", f"must be below milter.time_budget ({time_budget})")
    spool_memory_limit = milter.integer("spool_memory_limit", d.spool_memory_limit, minimum=0)
    spool_dir = milter.optional_text("spool_dir")
    if spool_dir is not None and not Path(spool_dir).is_dir():
        milter.problem("spool_dir", f"{spool_dir} is not a directory")
    shadow = milter.boolean("shadow", d.shadow)
    metrics_listen = metrics_address(milter, "metrics_listen")
    shutdown_grace = milter.seconds("shutdown_grace", time_budget, minimum=0.0)
    milter.finish()
    log_path = log_file(top)
    config = MilterConfig(
        listen=listen,
        hostname=hostname,
        time_budget=time_budget,
        keepalive_interval=keepalive,
        spool_memory_limit=spool_memory_limit,
        spool_dir=spool_dir,
        spam=_spam(top.section("spam")),
        virus=_virus(top.section("virus")),
        delivery=_delivery(top.section("delivery")),
        auth=_auth(top.section("auth")),
        log_file=log_path,
        shadow=shadow,
        metrics_listen=metrics_listen,
        shutdown_grace=shutdown_grace if milter.has("shutdown_grace") else None,
        source=source,
    )
    top.finish_document()
    return config


def load_config(path: str | Path) -> MilterConfig:
    source, data = load_yaml(path)
    return parse_config(source, data)


def pymilter_socket(listen: str) -> str:
    """Postfix's `inet:127.0.0.1:8891` -> libmilter's `inet:8891@127.0.0.1`."""
    address = parse_address(listen)
    if isinstance(address, UnixAddress):
        return f"unix:{address.path}"
    host = f"[{address.host}]" if ":" in address.host else address.host
    family = "inet6" if ":" in address.host else "inet"
    return f"{family}:{address.port}@{host}"
