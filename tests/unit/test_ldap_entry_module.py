"""The ldap role's ldap_entry module under `--check` on a host the play has not set up yet.

Run as Ansible runs a module (a JSON arguments file), with the Ansible venv's Python; a PATH
without ldap-utils stands for the fresh host. Before the fix the module died with a traceback
(FileNotFoundError: ldapsearch), and `--check` of the whole split layout stopped there.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
MODULE = REPO / "ansible/roles/ldap/library/ldap_entry.py"
ANSIBLE_PYTHON = REPO / ".venv-ansible/bin/python"

pytestmark = pytest.mark.skipif(not ANSIBLE_PYTHON.exists(), reason="make ansible-venv first")


def run_module(tmp_path: Path, check_mode: bool) -> dict[str, object]:
    args = tmp_path / "args.json"
    args.write_text(
        json.dumps(
            {
                "ANSIBLE_MODULE_ARGS": {
                    "dn": "dc=example,dc=org",
                    "attributes": {"objectClass": ["top", "dcObject", "organization"]},
                    "_ansible_check_mode": check_mode,
                }
            }
        )
    )
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run(
        [str(ANSIBLE_PYTHON), str(MODULE), str(args)],
        capture_output=True,
        text=True,
        env={"PATH": str(empty), "LANG": "C.UTF-8"},
        check=False,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_check_mode_on_a_fresh_host_says_the_entry_would_be_created(tmp_path: Path) -> None:
    result = run_module(tmp_path, check_mode=True)
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert "would be created" in str(result["msg"])


def test_a_real_run_without_ldap_utils_fails(tmp_path: Path) -> None:
    result = run_module(tmp_path, check_mode=False)
    assert result.get("failed") is True, result


def in_module(code: str) -> str:
    """Run `code` with the module imported as `m` (it needs Ansible's Python)."""
    prelude = f"import sys; sys.path.insert(0, {str(MODULE.parent)!r}); import ldap_entry as m\n"
    done = subprocess.run(
        [str(ANSIBLE_PYTHON), "-c", prelude + code], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_the_password_record_recognises_the_value_it_was_made_of_and_no_other() -> None:
    out = in_module(
        "h = m.record_hash('first secret')\n"
        "print('first secret' not in h, m.recorded_is(h, 'first secret'),"
        " m.recorded_is(h, 'second secret'), m.recorded_is('garbage', 'first secret'),"
        " m.recorded_is(None, 'first secret'), h != m.record_hash('first secret'))"
    )
    assert out == "True True False False False True"


def test_the_password_record_is_written_for_root_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ldap-passwords.json"
    in_module(f"m.write_record({str(path)!r}, {{'uid=a,dc=x': m.record_hash('s')}})")
    assert path.stat().st_mode & 0o777 == 0o600
    assert list(json.loads(path.read_text())) == ["uid=a,dc=x"]
    assert [p.name for p in path.parent.iterdir()] == ["ldap-passwords.json"]
