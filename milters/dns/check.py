"""`mailglue dns --check`: is what DNS answers now what `mailglue dns` says to publish?

The comparison is pure (`compare`): for each expected record, the answers for its name and
type are `ok` when one of them matches, `wrong` when the kind of record is there with another
value (an old DKIM key, an SPF without our MX), `missing` when there is nothing. TXT names
hold many records (site verifications beside SPF), so a TXT answer counts as the same kind
only when it starts with the same `v=` tag. The lookup (`lookup`) is the only I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import dns.exception
import dns.resolver

from milters.dns.records import Record

Answers = Mapping[tuple[str, str], Sequence[str]]


@dataclass(frozen=True)
class Finding:
    record: Record
    status: str  # ok | wrong | missing
    seen: tuple[str, ...] = ()

    def line(self) -> str:
        text = f"{self.status:<7} {self.record.name} {self.record.type} {self.record.value}"
        if self.status == "wrong":
            text += f"\n        DNS has: {' | '.join(self.seen)}"
        return text


def normal(record_type: str, value: str) -> str:
    """One spelling per value: TXT strings joined and tags spaced alike; others lowercased."""
    if record_type != "TXT":
        return " ".join(value.lower().split())
    strings = value.split('" "') if value.startswith('"') else [value]
    joined = "".join(s.strip('"') for s in strings)
    return "; ".join(t.strip() for t in joined.split(";") if t.strip())


def _tags(text: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (t.partition("=") for t in text.split(";"))}


def _kind(record_type: str, value: str) -> str:
    """TXT records of one name are told apart by their version tag (v=spf1, v=DKIM1...)."""
    if record_type != "TXT":
        return record_type
    version = _tags(value).get("v", "").split()
    return version[0] if version else ""


def _same(record_type: str, want: str, seen: str) -> bool:
    if record_type == "TXT" and _kind("TXT", want) == "DKIM1" == _kind("TXT", seen):
        return _tags(want).get("p") == _tags(seen).get("p")  # h=, s=, t= may differ
    return want == seen


def compare(expected: Sequence[Record], answers: Answers) -> list[Finding]:
    findings = []
    for record in expected:
        want = normal(record.type, record.value)
        seen = [normal(record.type, a) for a in answers.get((record.name, record.type), ())]
        if any(_same(record.type, want, s) for s in seen):
            findings.append(Finding(record, "ok"))
            continue
        same_kind = tuple(s for s in seen if _kind(record.type, s) == _kind(record.type, want))
        findings.append(Finding(record, "wrong" if same_kind else "missing", same_kind))
    return findings


def lookup(
    records: Sequence[Record], server: str | None = None, timeout: float = 5.0
) -> dict[tuple[str, str], list[str]]:
    """What DNS answers for each (name, type), as zone-file text; no answer is an empty list."""
    resolver = dns.resolver.Resolver(configure=server is None)
    if server is not None:
        host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "53")
        resolver.nameservers = [host]
        resolver.port = int(port)
    resolver.lifetime = timeout
    found: dict[tuple[str, str], list[str]] = {}
    for name, rtype in {(r.name, r.type) for r in records}:
        try:
            answer = resolver.resolve(name, rtype, raise_on_no_answer=False)
            found[name, rtype] = [rr.to_text() for rr in answer.rrset or []]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers):
            found[name, rtype] = []
        except dns.exception.Timeout as exc:
            raise TimeoutError(f"no answer for {name} {rtype} within {timeout} s") from exc
    return found


def check(
    expected: Sequence[Record],
    ask: Callable[[Sequence[Record]], Answers],
) -> tuple[list[Finding], int]:
    """Findings and the exit status: 0 when every record is as it should be, else 1."""
    findings = compare(expected, ask(expected))
    return findings, 0 if all(f.status == "ok" for f in findings) else 1
