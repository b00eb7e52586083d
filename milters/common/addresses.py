"""Mail addresses as mailglue compares them: bare, base (no `+extension`), domain keys.

One copy for the scan milter and the policy service alike; the domain key itself comes from
`lmtp_bridge.domains`, which LMTP routing uses too.
"""

from __future__ import annotations

from lmtp_bridge.domains import domain_of, normal_domain

__all__ = ["bare", "base_address", "domain_of", "normal_domain"]


def bare(address: str) -> str:
    """`<Alice@Example.org>` -> `Alice@Example.org` (for logs and Received)."""
    return address.strip().removeprefix("<").removesuffix(">")


def base_address(address: str, delimiter: str) -> str:
    """Lower-cased address without its extension (`alice+lists@x` -> `alice@x`)."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        local, domain = domain, ""
    if delimiter:
        cut = min((i for i in (local.find(c) for c in delimiter) if i > 0), default=-1)
        if cut > 0:
            local = local[:cut]
    return f"{local}@{normal_domain(domain)}".lower() if at else local.lower()
