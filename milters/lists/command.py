"""`mailglue lists`: one pass making Mailman's lists match the inventory (Ansible runs it).

stdout is for Ansible: with `--dry-run` one `would: …` line per change, then always one
summary line ending in `changed: N`. Events (one per change) go to the log file, or stderr.
"""

from __future__ import annotations

import sys

from milters.common.configkit import ConfigError
from milters.common.jsonlog import EventLog
from milters.common.mailman import MailmanError, MailmanRest
from milters.lists.config import load_lists_config
from milters.lists.sync import ListsSync, StateFileError


def run(config_path: str, dry_run: bool = False) -> int:
    """Exit status: 0 done, 1 Mailman unreachable or refusing (or the state file unreadable),
    2 config error."""
    try:
        config = load_lists_config(config_path)
    except ConfigError as exc:
        print(f"mailglue lists: configuration error:\n{exc}", file=sys.stderr)
        return 2
    api = config.mailman
    assert api.password is not None  # the config refuses a missing password
    mailman = MailmanRest(api.rest_url, api.user, api.password, timeout=api.timeout)
    log = EventLog(config.log_file, stream=None if config.log_file else sys.stderr)
    try:
        summary = ListsSync(config, log, mailman).run(dry_run=dry_run)
    except MailmanError as exc:
        log.emit(
            "lists_failed",
            method=exc.method,
            url=exc.url,
            status=exc.status,
            reason=exc.reason,
        )
        why = "is unreachable (is Mailman running?)" if exc.status is None else "refused"
        print(f"mailglue lists: Mailman's REST API {why}: {exc}", file=sys.stderr)
        return 1
    except StateFileError as exc:
        log.emit("lists_failed", reason=str(exc))
        print(f"mailglue lists: state file {exc}", file=sys.stderr)
        return 1
    finally:
        log.close()
    for line in summary.planned:
        print(f"would: {line}")
    print(summary.line(), flush=True)
    return 1 if summary.problems else 0
