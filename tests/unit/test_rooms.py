"""The rooms of `milters/` and who may import whom (see milters/__init__.py).

Read from the source with `ast`, imports inside functions included, so a rule holds for every
code path and not only for what a test happens to import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("common", "auth", "scanners", "scan", "policy", "ops", "learn", "quota", "dns", "lists")
TOP_LEVEL = {"milters", "milters.cli"}  # the package docstring and the command dispatcher
SESSION = "milters.scan.session"
PYMILTER = ("Milter", "milter")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: str) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


ALL = {**_modules("milters"), **_modules("lmtp_bridge")}


def _imports(path: Path) -> Iterator[str]:
    """Every module this file imports (`from a import b` also counts `a.b`, maybe a module)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _direct(module: str) -> set[str]:
    return set(_imports(ALL[module]))


def _reach(module: str) -> set[str]:
    """Every module `module` imports, directly or through our own modules."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for name in _direct(todo.pop()):
            if name not in seen:
                seen.add(name)
                if name in ALL:
                    todo.append(name)
    return seen


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else None


def _in(prefix: str) -> list[str]:
    return [m for m in ALL if m == prefix or m.startswith(prefix + ".")]


def test_every_module_lives_in_a_room() -> None:
    flat = [m for m in _in("milters") if _room(m) is None and m not in TOP_LEVEL]
    assert flat == []


@pytest.mark.parametrize("module", _in("milters.common"))
def test_common_imports_no_sibling_room(module: str) -> None:
    foreign = {
        name
        for name in _direct(module)
        if name.startswith("milters.") and _room(name) not in (None, "common")
    }
    assert foreign == set(), f"{module} imports another room"


@pytest.mark.parametrize("module", _in("milters.auth"))
def test_auth_imports_only_common(module: str) -> None:
    """The checks are a library for the milter: they never reach into scan or policy."""
    foreign = {
        name
        for name in _direct(module)
        if name.startswith("milters.") and _room(name) not in (None, "common", "auth")
    }
    assert foreign == set(), f"{module} imports another room"


@pytest.mark.parametrize(
    "module",
    [*_in("milters.ops"), *_in("milters.learn"), *_in("milters.quota"), *_in("milters.lists")],
)
def test_ops_learn_quota_and_lists_never_load_the_milter_session(module: str) -> None:
    reached = _reach(module)
    assert SESSION not in reached
    assert not [n for n in reached if n.split(".")[0] in PYMILTER], "pymilter is loaded"


@pytest.mark.parametrize(
    ("module", "other"),
    [*((m, "policy") for m in _in("milters.scan")), *((m, "scan") for m in _in("milters.policy"))],
)
def test_the_milter_and_the_policy_service_share_only_common(module: str, other: str) -> None:
    """What both daemons need (the LDAP directory, addresses) lives in `common`."""
    assert not [n for n in _direct(module) if _room(n) == other]


@pytest.mark.parametrize("module", _in("lmtp_bridge"))
def test_lmtp_bridge_imports_nothing_from_milters(module: str) -> None:
    assert not [n for n in _direct(module) if n.split(".")[0] == "milters"]


def test_the_rule_sees_the_session() -> None:
    """The check itself works: the daemon does reach the session and pymilter."""
    reached = _reach("milters.scan.daemon")
    assert SESSION in reached and "Milter" in reached
