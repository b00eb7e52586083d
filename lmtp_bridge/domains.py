"""Domain names as lookup keys: lower-case, without the root's trailing dot.

The one copy for the whole project (lmtp_bridge's routing and every `milters` room), kept in
`lmtp_bridge` because that package may import nothing from `milters`.
"""

from __future__ import annotations


def normal_domain(domain: str) -> str:
    """`Example.ORG.` -> `example.org`: how every table of local domains is keyed."""
    return domain.lower().rstrip(".")


def domain_of(address: str) -> str:
    """The normalised domain of a mail address (`` for a bare local part)."""
    return normal_domain(address.rpartition("@")[2])
