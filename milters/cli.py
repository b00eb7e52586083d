"""`mailglue`: one command, one subcommand per daemon or tool."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from milters.configkit import ConfigError

Handler = Callable[[argparse.Namespace], int]


def _milter(args: argparse.Namespace) -> int:
    from milters.config import load_config
    from milters.scan_milter import run

    run(load_config(args.config))
    return 0


def _policy(args: argparse.Namespace) -> int:
    from milters.policy.config import load_policy_config
    from milters.policy.server import run

    run(load_policy_config(args.config))
    return 0


def _config_kind(path: str) -> str:
    """A policy config has a top-level `policy:` section; anything else is a milter config."""
    from milters.configkit import load_yaml

    _, data = load_yaml(path)
    return "policy" if isinstance(data, dict) and "policy" in data else "milter"


def _check_config(args: argparse.Namespace) -> int:
    """Validate a config file; print the effective values or every problem found."""
    import dataclasses
    import json

    kind = args.kind or _config_kind(args.config)
    if kind == "policy":
        from milters.policy.config import load_policy_config

        config: object = load_policy_config(args.config)
    else:
        from milters.config import load_config

        config = load_config(args.config)
    assert dataclasses.is_dataclass(config) and not isinstance(config, type)
    print(json.dumps({"kind": kind, **dataclasses.asdict(config)}, default=str, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailglue", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    milter = sub.add_parser("milter", help="run the scan milter (Postfix smtpd_milters)")
    milter.add_argument("--config", required=True, help="path to milter.yaml")
    milter.set_defaults(handler=_milter)

    policy = sub.add_parser("policy", help="run the policy service (check_policy_service)")
    policy.add_argument("--config", required=True, help="path to policy.yaml")
    policy.set_defaults(handler=_policy)

    check = sub.add_parser("check-config", help="validate a config file and print it")
    check.add_argument("config", help="path to milter.yaml or policy.yaml")
    check.add_argument(
        "--kind",
        choices=("milter", "policy"),
        help="which daemon's config (default: guessed from the file)",
    )
    check.set_defaults(handler=_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"mailglue: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
