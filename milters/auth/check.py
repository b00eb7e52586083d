"""SPF, DKIM and DMARC for one incoming message: the DNS-asking shell around the libraries.

SPF is pyspf (the library behind Debian's postfix-policyd-spf-python), DKIM verification is
dkimpy, the DMARC record and its evaluation are the `dmarc` package, organisational domains
come from the Public Suffix List (`publicsuffixlist`). All three ask DNS through dnspython's
default resolver, which `use_nameservers` points at the configured servers (a local
validating resolver in production, a test name server in the tests).

Every DNS or library failure becomes a result (temperror, permerror), never an exception:
a message is never refused because a check could not run.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence
from functools import cache

import dkim
import dmarc
import dns.exception
import dns.nameserver
import dns.resolver
import spf
from publicsuffixlist import PublicSuffixList

from milters.auth.results import AuthResults, DkimResult, DmarcResult, SpfResult, from_domain

MAX_SIGNATURES = 5  # more are not verified (each costs a DNS query and an RSA operation)

SPF_RESULTS = {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"}


def nameserver(text: str) -> tuple[str, int]:
    """ "192.0.2.1", "192.0.2.1:5353", "2001:db8::1" or "[2001:db8::1]:5353" -> (ip, port).

    Raises ValueError for anything else.
    """
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") if rest else port
    elif text.count(":") == 1:
        host, port = text.split(":")
    ipaddress.ip_address(host)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r}")
    return host, int(port)


def use_nameservers(servers: Sequence[str], timeout: float) -> None:
    """Point every DNS query of this process at `servers` (see `nameserver`).

    No servers: the system's resolv.conf. The timeout bounds each query's whole lifetime.
    Called at start and at every reload (which also empties the cache).
    """
    resolver = dns.resolver.Resolver(configure=not servers)
    if servers:
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(host, port)
            for host, port in (nameserver(s) for s in servers)
        ]
    resolver.lifetime = timeout
    resolver.timeout = timeout
    # Answers are kept for their TTL: a sender's second message asks DNS nothing again.
    resolver.cache = dns.resolver.LRUCache(max_size=10000)
    dns.resolver.default_resolver = resolver


@cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def org_domain(domain: str) -> str:
    """The organisational domain (RFC 7489 3.2): bank.example for mail.bank.example."""
    return _psl().privatesuffix(domain) or domain


class _Psl:
    """The interface the `dmarc` package calls for relaxed alignment."""

    def get_public_suffix(self, domain: str) -> str:
        return org_domain(domain)


def check_spf(client_ip: str, mail_from: str, helo: str, timeout: float) -> SpfResult:
    """RFC 7208 for MAIL FROM's domain, or for the HELO name when the sender is null."""
    identity = "mailfrom" if "@" in mail_from else "helo"
    domain = mail_from.rsplit("@", 1)[1].lower() if identity == "mailfrom" else helo.lower()
    try:
        result, explanation = spf.check2(client_ip, mail_from, helo, timeout=timeout)
    except Exception as exc:  # pyspf raises its own errors for broken input
        return SpfResult("permerror", domain, identity, f"{type(exc).__name__}: {exc}")
    result = str(result).lower()
    if result not in SPF_RESULTS:
        result = "permerror"
    return SpfResult(result, domain, identity, str(explanation))


def _txt(name: bytes | str, timeout: float = 5) -> bytes | None:
    """dkimpy's DNS hook: the TXT record at `name`, strings joined, None if there is none."""
    qname = name.decode("ascii") if isinstance(name, bytes) else name
    try:
        answer = dns.resolver.resolve(qname, "TXT", lifetime=timeout, raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except dns.exception.DNSException as exc:
        raise dkim.DnsTimeoutError(str(exc)) from exc
    for record in answer:
        return b"".join(record.strings)
    return None


def check_dkim(message: bytes, timeout: float) -> tuple[DkimResult, ...]:
    """Each DKIM-Signature (the first MAX_SIGNATURES), verified on its own."""
    try:
        verifier = dkim.DKIM(message, timeout=timeout)
    except Exception as exc:  # a message dkimpy cannot even parse
        return (DkimResult("permerror", "", "", f"{type(exc).__name__}: {exc}"),)
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    results = []
    for index in range(min(count, MAX_SIGNATURES)):
        verifier.signature_fields = {}  # each verify() sets the fields of the one it checks
        try:
            ok = verifier.verify(idx=index, dnsfunc=_txt)
            result, reason = ("pass", "") if ok else ("fail", "signature did not verify")
        except dkim.DnsTimeoutError as exc:
            result, reason = "temperror", f"key lookup failed: {exc}"
        except dkim.DKIMException as exc:
            result, reason = "permerror", str(exc)
        fields = getattr(verifier, "signature_fields", None) or {}
        results.append(
            DkimResult(
                result,
                fields.get(b"d", b"").decode("ascii", "replace").lower(),
                fields.get(b"s", b"").decode("ascii", "replace"),
                reason,
            )
        )
    return tuple(results)


def _dmarc_record(domain: str, timeout: float) -> str | None:
    """The `v=DMARC1` TXT record at _dmarc.<domain>; None when there is none (or several)."""
    try:
        answer = dns.resolver.resolve(
            f"_dmarc.{domain}", "TXT", lifetime=timeout, raise_on_no_answer=False
        )
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    records = [
        text
        for text in (b"".join(r.strings).decode("utf-8", "replace") for r in answer)
        if text.replace(" ", "").lower().startswith("v=dmarc1")
    ]
    return records[0] if len(records) == 1 else None


def check_dmarc(
    from_values: list[str],
    spf_result: SpfResult,
    dkim_results: Sequence[DkimResult],
    timeout: float,
) -> DmarcResult:
    """RFC 7489: the From domain's policy (or its organisational domain's), and alignment."""
    domain = from_domain(from_values)
    if domain is None:
        return DmarcResult("permerror", "", reason="no single From address")
    try:
        record = _dmarc_record(domain, timeout)
        used_org = None
        if record is None and org_domain(domain) != domain:
            used_org = org_domain(domain)
            record = _dmarc_record(used_org, timeout)
    except dns.exception.DNSException as exc:
        return DmarcResult("temperror", domain, reason=f"policy lookup failed: {exc}")
    if record is None:
        return DmarcResult("none", domain)
    try:
        policy = dmarc.DMARCPolicy(
            record, domain=domain, org_domain=used_org, publicsuffix=_Psl(), strict=False
        )
    except dmarc.RecordSyntaxError as exc:
        return DmarcResult("permerror", domain, reason=f"bad record: {exc}")
    auth: list[dmarc.AuthResult] = [
        dmarc.DKIM(d.domain, dmarc.DKIMResult(d.result))
        for d in dkim_results
        if d.domain and d.result in {r.value for r in dmarc.DKIMResult}
    ]
    if spf_result.domain and spf_result.result in {r.value for r in dmarc.SPFResult}:
        auth.append(dmarc.SPF(spf_result.domain, dmarc.SPFResult(spf_result.result)))
    with contextlib.suppress(dmarc.PolicyError):  # a failure is read from policy.result
        policy.verify(auth_results=auth)
    outcome = policy.result
    assert outcome is not None
    published = policy.policy.p
    if used_org and policy.policy.sp is not dmarc.DMARCDisposition.UNSPECIFIED:
        published = policy.policy.sp  # a subdomain under its organisation's record
    if outcome.result is dmarc.DMARCResult.PASS:
        return DmarcResult("pass", domain, published.value)
    asked = outcome.disposition.value
    reason = ""
    if asked in ("reject", "quarantine") and policy.policy.pct < 100:
        # RFC 7489 6.6.4: mail not sampled by pct gets the next milder policy; we apply the
        # milder one to all, so pct never turns a reject into a coin toss.
        milder = "quarantine" if asked == "reject" else "none"
        reason = f"pct={policy.policy.pct}: {asked} applied as {milder}"
        asked = milder
    return DmarcResult("fail", domain, asked, reason)


def authenticate(
    message: bytes | None,
    client_ip: str,
    helo: str,
    mail_from: str,
    from_values: list[str],
    timeout: float,
) -> AuthResults:
    """All three for one message; `message` None: too large to verify its signatures."""
    spf_result = check_spf(client_ip, mail_from, helo, timeout)
    if message is None:
        dkim_results: tuple[DkimResult, ...] = (
            DkimResult("neutral", "", "", "not verified: message over auth.max_size"),
        )
    else:
        dkim_results = check_dkim(message, timeout)
    return AuthResults(
        spf_result, dkim_results, check_dmarc(from_values, spf_result, dkim_results, timeout)
    )
