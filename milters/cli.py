"""`mailglue`: one command, one subcommand per daemon or tool."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from milters.common.configkit import ConfigError
from milters.ops.checkconfig import KINDS

Handler = Callable[[argparse.Namespace], int]


def _milter(args: argparse.Namespace) -> int:
    from milters.scan.config import load_config
    from milters.scan.daemon import run

    run(load_config(args.config))
    return 0


def _policy(args: argparse.Namespace) -> int:
    from milters.policy.config import load_policy_config
    from milters.policy.server import run

    run(load_policy_config(args.config))
    return 0


def _check_config(args: argparse.Namespace) -> int:
    """Validate a config file; print the effective values or every problem found."""
    from milters.ops.checkconfig import run

    return run(args.config, args.kind)


def _trace(args: argparse.Namespace) -> int:
    from milters.ops.trace import command

    return command(args.query, args.files, args.since, args.until, args.json, args.maillog)


def _tail(args: argparse.Namespace) -> int:
    from milters.ops.tail import command

    return command(args.file, args.action)


def _learn(args: argparse.Namespace) -> int:
    from milters.learn.command import run

    return run(args.config, every=args.every)


def _quota(args: argparse.Namespace) -> int:
    from milters.quota.command import run

    return run(args.config, every=args.every, dry_run=args.dry_run)


def _lists(args: argparse.Namespace) -> int:
    from milters.lists.command import run

    return run(args.config, dry_run=args.dry_run)


def _dns(args: argparse.Namespace) -> int:
    from milters.dns.command import run

    return run(
        args.config, check_dns=args.check, server=args.server, policy_only=args.mta_sts_policy
    )


def _replay(args: argparse.Namespace) -> int:
    """Scan one message file with the configured spamd/clamd and print the decision."""
    from pathlib import Path

    from milters.ops.replay import describe, render_decision, replay
    from milters.scan.config import load_config

    config = load_config(args.config)
    raw = sys.stdin.buffer.read() if args.message == "-" else Path(args.message).read_bytes()
    recipients = args.to or ["postmaster@localhost"]
    verdict, report = replay(config, raw, args.sender, recipients)
    result = describe(verdict, report, args.sender, recipients)
    print(render_decision(result, as_json=args.json))
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
    check.add_argument(
        "config", help="path to milter.yaml, policy.yaml, learn.yaml, quota.yaml or lists.yaml"
    )
    check.add_argument(
        "--kind",
        choices=KINDS,
        help="which daemon's config (default: guessed from the file)",
    )
    check.set_defaults(handler=_check_config)

    trace = sub.add_parser("trace", help="explain what happened to a message, from the logs")
    trace.add_argument("query", help="queue id, Message-ID, or sender/recipient address")
    trace.add_argument("files", nargs="*", help="log files (rotated ones are read too); - stdin")
    trace.add_argument("--since", help="ISO time or 30m/2h/1d ago (UTC)")
    trace.add_argument("--until", help="ISO time or 30m/2h/1d ago (UTC)")
    trace.add_argument("--json", action="store_true", help="one JSON object per trace")
    trace.add_argument(
        "--maillog",
        action="append",
        default=[],
        metavar="PATH",
        help="Postfix's log, for a list post's member deliveries (repeatable; "
        "default: the first of /var/log/postfix.log, /var/log/mail.log)",
    )
    trace.set_defaults(handler=_trace)

    tail = sub.add_parser("tail", help="follow the milter log, one line per transaction")
    tail.add_argument("file", nargs="?", help="the milter's log file (default: from its config)")
    tail.add_argument("--action", help="only this action (reject, tempfail, delivered, accept)")
    tail.set_defaults(handler=_tail)

    learn = sub.add_parser("learn", help="teach spamd from the LearnSpam folder")
    learn.add_argument("--config", required=True, help="path to learn.yaml")
    _add_every(learn)
    learn.set_defaults(handler=_learn)

    quota = sub.add_parser("quota", help="set each member's Cyrus quota from LDAP")
    quota.add_argument("--config", required=True, help="path to quota.yaml")
    _add_every(quota)
    quota.add_argument("--dry-run", action="store_true", help="log what would change; set nothing")
    quota.set_defaults(handler=_quota)

    lists = sub.add_parser("lists", help="make Mailman's lists match the inventory (additive)")
    lists.add_argument("--config", required=True, help="path to lists.yaml")
    lists.add_argument(
        "--dry-run", action="store_true", help="print what would change; change nothing"
    )
    lists.set_defaults(handler=_lists)

    dns = sub.add_parser("dns", help="print the DNS records to publish for the mail domains")
    dns.add_argument("--config", default="/etc/mailglue/dns.yaml", help="path to dns.yaml")
    dns.add_argument("--check", action="store_true", help="compare with what DNS answers now")
    dns.add_argument("--server", help="ask this name server (HOST or HOST:PORT), not the system's")
    dns.add_argument(
        "--mta-sts-policy",
        action="store_true",
        help="print only the MTA-STS policy file, as https://mta-sts.DOMAIN serves it",
    )
    dns.set_defaults(handler=_dns)

    replay = sub.add_parser("replay", help="scan one message as the milter would; no delivery")
    replay.add_argument("message", help="the message file (.eml), or - for stdin")
    replay.add_argument("--config", required=True, help="path to milter.yaml")
    replay.add_argument("--from", dest="sender", default="", help="envelope sender")
    replay.add_argument("--to", action="append", help="envelope recipient (repeatable)")
    replay.add_argument("--json", action="store_true", help="print the decision as JSON")
    replay.set_defaults(handler=_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `trace QUERY --since 1h FILE`: argparse stops filling `files` at the first option
        if not hasattr(args, "files") or any(x.startswith("-") and x != "-" for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.files = [*args.files, *extra]
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"mailglue: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `mailglue trace … | head`: the reader had enough
        sys.stderr.close()
        return 0


def _add_every(command: argparse.ArgumentParser) -> None:
    """`--every SECONDS`: the periodic commands run once, or as a service (common/periodic)."""
    command.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="run again every SECONDS until stopped (run as a service; Ansible does this)",
    )


if __name__ == "__main__":
    sys.exit(main())
