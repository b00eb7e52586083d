"""`mailglue`: one command, one subcommand per daemon or tool."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from milters.common.configkit import ConfigError

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


def _config_kind(path: str) -> str:
    """Which daemon's file: a policy config has a top-level `policy:` section, a quota config
    a `quota:` section, a learn config an `imap:` one; anything else is a milter config."""
    from milters.common.configkit import load_yaml

    _, data = load_yaml(path)
    if isinstance(data, dict):
        for section, kind in (("policy", "policy"), ("quota", "quota"), ("imap", "learn")):
            if section in data:
                return kind
    return "milter"


def _check_config(args: argparse.Namespace) -> int:
    """Validate a config file; print the effective values or every problem found."""
    import dataclasses
    import json

    kind = args.kind or _config_kind(args.config)
    if kind == "policy":
        from milters.policy.config import load_policy_config

        config: object = load_policy_config(args.config)
    elif kind == "learn":
        from milters.learn.config import load_learn_config

        config = load_learn_config(args.config)
    elif kind == "quota":
        from milters.quota.config import load_quota_config

        config = load_quota_config(args.config)
    else:
        from milters.scan.config import load_config

        config = load_config(args.config)
    assert dataclasses.is_dataclass(config) and not isinstance(config, type)
    print(json.dumps({"kind": kind, **dataclasses.asdict(config)}, default=str, indent=2))
    return 0


def _log_sources(files: Sequence[str]) -> list[str]:
    from milters.ops.logread import configured_logs

    sources = list(files) or configured_logs()
    if not sources:
        raise ConfigError(
            ["no log files given, and none named in /etc/mailglue/{milter,policy}.yaml"]
        )
    return sources


def _trace(args: argparse.Namespace) -> int:
    """Print every transaction (and RCPT decision) matching QUERY."""
    import json
    from datetime import UTC, datetime

    from milters.ops.logread import in_window, parse_time, read_events
    from milters.ops.trace import find, render

    now = datetime.now(UTC)
    try:
        since = parse_time(args.since, now) if args.since else None
        until = parse_time(args.until, now) if args.until else None
    except ValueError as exc:
        print(f"mailglue trace: {exc}", file=sys.stderr)
        return 2
    traces = []
    for trace in find(read_events(_log_sources(args.files)), args.query):
        if in_window({"ts": trace.when}, since, until):
            traces.append(trace)
    for trace in traces:
        if args.json:
            print(json.dumps(trace.as_dict(), ensure_ascii=False))
        else:
            print(render(trace), end="\n\n")
    if not traces:
        print(f"mailglue trace: nothing found for {args.query!r}", file=sys.stderr)
        return 1
    return 0


def _tail(args: argparse.Namespace) -> int:
    """Follow the milter's log, one line per transaction."""
    from pathlib import Path

    from milters.ops.logread import parse_events
    from milters.ops.tail import follow, tail_line, wanted

    color = sys.stdout.isatty()
    if args.file == "-":
        events = parse_events(sys.stdin)
    else:
        events = follow(Path(args.file or _log_sources([])[0]))
    for event in events:
        if wanted(event, args.action):
            print(tail_line(event, color), flush=True)
    return 0


def _learn(args: argparse.Namespace) -> int:
    """Teach spamd from the LearnSpam folder; exit 1 if any message could not be learned.

    With `--every N` it runs again every N seconds until stopped: the form a service manager
    without timers (supervisor) can run, re-reading the config before each pass.
    """
    import time

    while True:
        status = _learn_once(args.config)
        if args.every is None:
            return status
        time.sleep(args.every)


def _learn_once(path: str) -> int:
    import imaplib

    from milters.common.jsonlog import EventLog
    from milters.learn.config import load_learn_config
    from milters.learn.learner import Learner

    try:
        config = load_learn_config(path)
    except ConfigError as exc:
        print(f"mailglue learn: configuration error:\n{exc}", file=sys.stderr)
        return 2
    log = EventLog(config.log_file, stream=None if config.log_file else sys.stderr)
    try:
        summary = Learner(config, log).run()
    except (OSError, imaplib.IMAP4.error) as exc:
        print(f"mailglue learn: {config.imap.host}:{config.imap.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        log.close()
    print(summary.line(), flush=True)
    return 1 if summary.counts.get("error") else 0


def _quota(args: argparse.Namespace) -> int:
    """Copy each member's quota from LDAP into Cyrus (see milters/quota)."""
    from milters.quota.command import run

    return run(args.config, every=args.every, dry_run=args.dry_run)


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
    check.add_argument("config", help="path to milter.yaml, policy.yaml, learn.yaml or quota.yaml")
    check.add_argument(
        "--kind",
        choices=("milter", "policy", "learn", "quota"),
        help="which daemon's config (default: guessed from the file)",
    )
    check.set_defaults(handler=_check_config)

    trace = sub.add_parser("trace", help="explain what happened to a message, from the logs")
    trace.add_argument("query", help="queue id, Message-ID, or sender/recipient address")
    trace.add_argument("files", nargs="*", help="log files (rotated ones are read too); - stdin")
    trace.add_argument("--since", help="ISO time or 30m/2h/1d ago (UTC)")
    trace.add_argument("--until", help="ISO time or 30m/2h/1d ago (UTC)")
    trace.add_argument("--json", action="store_true", help="one JSON object per trace")
    trace.set_defaults(handler=_trace)

    tail = sub.add_parser("tail", help="follow the milter log, one line per transaction")
    tail.add_argument("file", nargs="?", help="the milter's log file (default: from its config)")
    tail.add_argument("--action", help="only this action (reject, tempfail, delivered, accept)")
    tail.set_defaults(handler=_tail)

    learn = sub.add_parser("learn", help="teach spamd from the LearnSpam folder")
    learn.add_argument("--config", required=True, help="path to learn.yaml")
    learn.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="run again every SECONDS until stopped (run as a service; Ansible does this)",
    )
    learn.set_defaults(handler=_learn)

    quota = sub.add_parser("quota", help="set each member's Cyrus quota from LDAP")
    quota.add_argument("--config", required=True, help="path to quota.yaml")
    quota.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="run again every SECONDS until stopped (run as a service; Ansible does this)",
    )
    quota.add_argument("--dry-run", action="store_true", help="log what would change; set nothing")
    quota.set_defaults(handler=_quota)

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


if __name__ == "__main__":
    sys.exit(main())
