"""The records the world needs to find, trust and use our mail server, as zone-file lines.

Pure: the facts (names, addresses, the DKIM public key, the TLS certificate's key digest)
come in as values, the records go out; no DNS queries, no files. One function per kind, so
each record's reason sits next to it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# The DKIM key and TLS digest are facts read from files by config.py; everything else here is
# a rule an admin can check against the RFCs named in each function.


@dataclass(frozen=True)
class Dkim:
    selector: str
    public_key: str  # base64 SubjectPublicKeyInfo, the p= tag
    key_type: str = "rsa"


@dataclass(frozen=True)
class MailDomain:
    name: str
    dkim: tuple[Dkim, ...] = ()
    dmarc_policy: str = "quarantine"  # none | quarantine | reject
    dmarc_reports: str | None = None  # an address for aggregate reports (rua)


@dataclass(frozen=True)
class Facts:
    hostname: str  # the MX host, as in its certificate and SMTP banner
    domains: tuple[MailDomain, ...]
    addresses: tuple[str, ...] = ()  # the MX host's public IPv4/IPv6 addresses
    spf_include: tuple[str, ...] = ()  # e.g. the relay host's SPF domain
    tls_spki_sha256: str | None = None  # hex digest of the certificate's public key
    mta_sts_mode: str = "testing"  # testing | enforce
    mta_sts_max_age: int = 604800


@dataclass(frozen=True)
class Record:
    name: str  # fully qualified, with the trailing dot
    type: str
    value: str
    why: str

    def line(self) -> str:
        return f"{self.name:<40} 3600 IN {self.type:<5} {self.value}"


def fqdn(name: str) -> str:
    return name.rstrip(".").lower() + "."


def txt(text: str) -> str:
    """A TXT value: quoted, split in strings of at most 255 octets (RFC 1035 3.3)."""
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def host_records(facts: Facts) -> list[Record]:
    host = fqdn(facts.hostname)
    found = []
    for address in facts.addresses:
        kind = "AAAA" if ":" in address else "A"
        found.append(Record(host, kind, address, "the MX host; its PTR should name it back"))
    if facts.tls_spki_sha256:
        for port in (25, 587, 993):
            found.append(
                Record(
                    f"_{port}._tcp.{host}",
                    "TLSA",
                    f"3 1 1 {facts.tls_spki_sha256}",
                    "DANE (RFC 7672): validating senders check our key; needs a signed zone",
                )
            )
    return found


def domain_records(facts: Facts, domain: MailDomain) -> list[Record]:
    zone, host = fqdn(domain.name), fqdn(facts.hostname)
    spf = " ".join(["v=spf1", "mx", *(f"include:{d}" for d in facts.spf_include), "-all"])
    dmarc = f"v=DMARC1; p={domain.dmarc_policy}"
    if domain.dmarc_reports:
        dmarc += f"; rua=mailto:{domain.dmarc_reports}"
    found = [
        Record(zone, "MX", f"10 {host}", "where mail for the domain goes"),
        Record(zone, "TXT", txt(spf), "SPF (RFC 7208): only our MX (and the relay) send for it"),
    ]
    for key in domain.dkim:
        value = f"v=DKIM1; k={key.key_type}; p={key.public_key}"
        found.append(
            Record(f"{key.selector}._domainkey.{zone}", "TXT", txt(value), "DKIM: our signatures")
        )
    found += [
        Record(f"_dmarc.{zone}", "TXT", txt(dmarc), "DMARC (RFC 7489): what to do with forgeries"),
        Record(
            f"_mta-sts.{zone}",
            "TXT",
            txt(f"v=STSv1; id={mta_sts_id(facts)}"),
            f"MTA-STS (RFC 8461): the policy at https://mta-sts.{zone[:-1]}/.well-known/mta-sts.txt",
        ),
        Record(
            f"mta-sts.{zone}",
            "CNAME",
            host,
            "must serve the policy below over HTTPS with a public certificate for this name",
        ),
        Record(f"_submission._tcp.{zone}", "SRV", f"0 1 587 {host}", "mail clients (RFC 6186)"),
        Record(f"_imaps._tcp.{zone}", "SRV", f"0 1 993 {host}", "mail clients (RFC 6186)"),
        Record(f"_imap._tcp.{zone}", "SRV", "0 0 0 .", "plain IMAP is not offered (RFC 6186)"),
        Record(
            f"autoconfig.{zone}", "CNAME", host, "Thunderbird's autoconfig, served by the stack"
        ),
    ]
    return found


def mta_sts_policy(facts: Facts) -> str:
    """The policy file for https://mta-sts.DOMAIN/.well-known/mta-sts.txt (RFC 8461 3.2)."""
    return (
        "version: STSv1\r\n"
        f"mode: {facts.mta_sts_mode}\r\n"
        f"mx: {facts.hostname.rstrip('.').lower()}\r\n"
        f"max_age: {facts.mta_sts_max_age}\r\n"
    )


def mta_sts_id(facts: Facts) -> str:
    """Changes whenever the policy does, as RFC 8461 asks; derived, so no state to keep."""
    return hashlib.sha256(mta_sts_policy(facts).encode()).hexdigest()[:20]


def all_records(facts: Facts) -> list[Record]:
    found = host_records(facts)
    for domain in facts.domains:
        found += domain_records(facts, domain)
    return found


def zone_text(facts: Facts) -> str:
    """What `mailglue dns` prints: each record with its reason, then the MTA-STS policy."""
    lines = []
    for record in all_records(facts):
        lines.append(f"; {record.why}")
        lines.append(record.line())
    if not facts.addresses:
        lines.insert(0, f"; add A/AAAA records for {fqdn(facts.hostname)} (dns.addresses)")
    lines.append("")
    lines.append("; MTA-STS policy file, for every domain (served as text/plain):")
    lines += ["; " + line for line in mta_sts_policy(facts).splitlines()]
    return "\n".join(lines) + "\n"
