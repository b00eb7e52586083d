"""`mailglue learn`: one pass over LearnSpam, or one every N seconds (common/periodic.py)."""

from __future__ import annotations

import imaplib
import sys

from milters.common.configkit import ConfigError
from milters.common.jsonlog import EventLog
from milters.common.periodic import repeat
from milters.learn.config import load_learn_config
from milters.learn.learner import Learner


def run(config_path: str, every: float | None = None) -> int:
    """Exit status: 0 all learned, 1 a message could not be learned or IMAP failed, 2 config."""
    return repeat(lambda: once(config_path), every)


def once(config_path: str) -> int:
    try:
        config = load_learn_config(config_path)
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
