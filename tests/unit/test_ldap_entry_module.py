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
