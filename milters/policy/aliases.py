"""Alias expansion as the policy service sees it: which addresses an alias finally reaches.

Pure apart from the `members_of` callback (the directory lookup), so the rules are table-tested
with a dict: members in our own domains that are aliases themselves are followed (to
`max_depth` levels), an alias met again on its own path is a loop, and everything else ends up
either as a local address (a user the recipient checks then apply to) or an outside address
(Postfix relays it). The same alias reached along two branches is expanded once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from milters.common.addresses import domain_of

__all__ = ["MAX_DEPTH", "Expansion", "expand"]

MAX_DEPTH = 8

# The members of an alias (as stored), or None when the address is not an alias.
MembersOf = Callable[[str], Sequence[str] | None]


@dataclass(frozen=True)
class Expansion:
    """Where an alias leads. `problem` is set when the alias is misconfigured."""

    local: tuple[str, ...] = ()  # addresses in our domains that are not aliases: users
    remote: tuple[str, ...] = ()  # addresses elsewhere
    problem: str | None = None  # "loop: a -> b -> a" or "deeper than 8 levels"


def _normal(address: str) -> str:
    return address.strip().strip("<>").lower().rstrip(".")


def expand(
    address: str,
    members_of: MembersOf,
    local_domains: Collection[str],
    max_depth: int = MAX_DEPTH,
) -> Expansion | None:
    """The expansion of `address`, or None when it is not an alias at all."""
    top = _normal(address)
    first = members_of(top)
    if first is None:
        return None
    local: dict[str, None] = {}
    remote: dict[str, None] = {}
    done: set[str] = set()

    def walk(members: Sequence[str], path: tuple[str, ...]) -> str | None:
        for raw in members:
            member = _normal(raw)
            if not member:
                continue
            if "@" not in member or domain_of(member) not in local_domains:
                remote[member] = None
                continue
            if member in path:
                return "loop: " + " -> ".join((*path, member))
            if member in done:
                continue
            nested = members_of(member)
            if nested is None:
                local[member] = None
                continue
            if len(path) >= max_depth:
                return f"deeper than {max_depth} levels: " + " -> ".join((*path, member))
            done.add(member)
            problem = walk(nested, (*path, member))
            if problem is not None:
                return problem
        return None

    done.add(top)
    problem = walk(first, (top,))
    if problem is not None:
        return Expansion(problem=problem)
    return Expansion(tuple(local), tuple(remote))
