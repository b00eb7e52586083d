"""`mailglue dns`: print the records to publish, as zone-file lines with their reasons; with
`--check`, compare them with what DNS answers now and name each one missing or wrong; with
`--mta-sts-policy`, print only the MTA-STS policy file, byte for byte as it is served (the
deployment publishes this output, so the file and the TXT record's id come from one function)."""

from __future__ import annotations

import sys

from milters.dns.check import check, lookup
from milters.dns.config import load_dns_config
from milters.dns.records import all_records, mta_sts_policy, zone_text


def run(
    config_path: str,
    check_dns: bool = False,
    server: str | None = None,
    policy_only: bool = False,
) -> int:
    facts = load_dns_config(config_path)
    if policy_only:
        sys.stdout.buffer.write(mta_sts_policy(facts).encode("ascii"))
        sys.stdout.flush()
        return 0
    if not check_dns:
        sys.stdout.write(zone_text(facts))
        return 0
    try:
        findings, status = check(all_records(facts), lambda wanted: lookup(wanted, server))
    except TimeoutError as exc:
        print(f"mailglue dns --check: {exc}", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding.line())
    bad = [f for f in findings if f.status != "ok"]
    print(
        f"{len(findings) - len(bad)} of {len(findings)} records as they should be", file=sys.stderr
    )
    return status
