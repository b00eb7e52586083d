"""The harness's tuned spamd is the spamd the spamassassin role deploys (issue 17).

The benchmark and the integration tests run `tests/harness/spamd.py`; the deployment runs the
role. What makes the tuned spamd cheaper must be the same in both, so this ties them together:
the role's defaults turn both tunings on, and the harness loads the role's own files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.harness import spamd

ROLE = Path(__file__).resolve().parents[2] / "ansible/roles/spamassassin"


def role_defaults() -> dict[str, object]:
    data = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_the_role_deploys_both_tunings_by_default() -> None:
    defaults = role_defaults()
    assert defaults["spamassassin_compile_rules"] is True
    assert defaults["spamassassin_skip_config_restore"] is True


def test_the_harness_loads_rule2xsbody_as_the_role_does() -> None:
    template = (ROLE / "templates/etc/spamassassin/sa-compile.pre.j2").read_text()
    plugin = "loadplugin Mail::SpamAssassin::Plugin::Rule2XSBody"
    assert plugin in spamd.COMPILED_PRE_TEXT
    assert any(line.strip() == plugin for line in template.splitlines())


def test_the_harness_runs_the_roles_keep_config_module(tmp_path: Path) -> None:
    assert spamd.KEEP_CONFIG_DIR == ROLE / "files/perl"
    assert (spamd.KEEP_CONFIG_DIR / "Mailglue/SpamdKeepConfig.pm").is_file()
    tasks = (ROLE / "tasks/main.yml").read_text()
    assert "-MMailglue::SpamdKeepConfig" in tasks and "--nouser-config" in tasks
    tuned = spamd.Spamd(tmp_path, tuned=True).command
    untuned = spamd.Spamd(tmp_path, tuned=False).command
    assert tuned[:2] == ("/usr/bin/perl", "-T") and "-MMailglue::SpamdKeepConfig" in tuned
    assert tuned[-1] == untuned[-1] == "/usr/sbin/spamd"
    assert untuned == ("/usr/sbin/spamd",)


def test_the_verdict_tests_local_cf_is_the_roles_with_bayes_off() -> None:
    template = (ROLE / "templates/etc/spamassassin/local.cf.j2").read_text()
    defaults = role_defaults()
    rendered = template.replace(
        "{{ spamassassin_required_score }}", str(defaults["spamassassin_required_score"])
    ).replace("{{ mail_hostname }}", "mail.example.org")
    for line in spamd.deployed_local_cf().splitlines():
        if line.startswith("#") or line.startswith(("use_bayes", "bayes_auto_learn")):
            continue
        assert line in rendered.splitlines(), line


@pytest.mark.parametrize(
    ("args", "active"),
    [
        (["--nouser-config", "--allow-tell"], True),
        (["-L", "-x"], True),
        (["--allow-tell"], False),  # spamd reads users' user_prefs by default
        (["-x", "-q"], False),  # SQL preferences
        (["--nouser-config", "--virtual-config-dir=/srv/%u"], False),
        (["--nouser-config", "--ldap-config"], False),
    ],
)
def test_keep_config_is_active_only_without_per_user_configuration(
    args: list[str], active: bool
) -> None:
    done = subprocess.run(
        [
            "perl",
            "-T",
            f"-I{spamd.KEEP_CONFIG_DIR}",
            "-MMailglue::SpamdKeepConfig",
            "-e",
            "print $Mailglue::SpamdKeepConfig::ACTIVE",
            "--",
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout == ("1" if active else "0"), done.stdout + done.stderr
    said = "keeps its configuration" if active else "restores its configuration"
    assert said in done.stderr, done.stderr
