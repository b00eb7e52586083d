"""`mailglue quota`: one pass, or one every N seconds (common/periodic.py)."""

from __future__ import annotations

import imaplib
import sys

from milters.common.configkit import ConfigError
from milters.common.jsonlog import EventLog
from milters.common.ldapconn import DirectoryUnavailable
from milters.common.periodic import repeat
from milters.quota.config import load_quota_config
from milters.quota.sync import QuotaSync


def run(config_path: str, every: float | None = None, dry_run: bool = False) -> int:
    """Exit status: 0 all set, 1 a member's value was wrong or LDAP/Cyrus failed, 2 config."""
    return repeat(lambda: once(config_path, dry_run), every)


def once(config_path: str, dry_run: bool = False) -> int:
    try:
        config = load_quota_config(config_path)
    except ConfigError as exc:
        print(f"mailglue quota: configuration error:\n{exc}", file=sys.stderr)
        return 2
    log = EventLog(config.log_file, stream=None if config.log_file else sys.stderr)
    try:
        summary = QuotaSync(config, log).run(dry_run=dry_run)
    except DirectoryUnavailable as exc:
        log.emit("quota_failed", backend="ldap", reason=str(exc))
        print(f"mailglue quota: LDAP {exc}", file=sys.stderr)
        return 1
    except (OSError, imaplib.IMAP4.error) as exc:
        where = f"{config.imap.host}:{config.imap.port}"
        log.emit("quota_failed", backend="imap", reason=f"{where}: {exc}")
        print(f"mailglue quota: IMAP {where}: {exc}", file=sys.stderr)
        return 1
    finally:
        log.close()
    print(summary.line(), flush=True)
    return 1 if summary.problems else 0
