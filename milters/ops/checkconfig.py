"""`mailglue check-config`: validate any of mailglue's config files and print what it means.

Every value is shown with its default filled in; passwords are `Secret`s and print as a
mask. A file with problems raises ConfigError, which names each key.
"""

from __future__ import annotations

import dataclasses
import json

from milters.common.configkit import load_yaml

KINDS = ("milter", "policy", "learn", "quota", "lists")


def kind_of(path: str) -> str:
    """Which daemon's file: a policy config has a top-level `policy:` section, a quota config
    a `quota:` section, a lists config a `lists:` (or `mailman:`) one, a learn config an
    `imap:` one; anything else is a milter config."""
    _, data = load_yaml(path)
    if isinstance(data, dict):
        for section, kind in (
            ("policy", "policy"),
            ("quota", "quota"),
            ("lists", "lists"),
            ("mailman", "lists"),
            ("imap", "learn"),
        ):
            if section in data:
                return kind
    return "milter"


def load(path: str, kind: str) -> object:
    if kind == "policy":
        from milters.policy.config import load_policy_config

        return load_policy_config(path)
    if kind == "learn":
        from milters.learn.config import load_learn_config

        return load_learn_config(path)
    if kind == "quota":
        from milters.quota.config import load_quota_config

        return load_quota_config(path)
    if kind == "lists":
        from milters.lists.config import load_lists_config

        return load_lists_config(path)
    from milters.scan.config import load_config

    return load_config(path)


def run(path: str, kind: str | None = None) -> int:
    kind = kind or kind_of(path)
    config = load(path, kind)
    assert dataclasses.is_dataclass(config) and not isinstance(config, type)
    print(json.dumps({"kind": kind, **dataclasses.asdict(config)}, default=str, indent=2))
    return 0
