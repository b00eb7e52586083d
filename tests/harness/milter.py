"""The scan milter as a real subprocess (`mailglue milter --config FILE`), as Postfix sees it.

Tests that need another policy (accept on failure, a dead backend) call `ensure(config)`:
the milter is restarted on the same port only when the wanted config differs from the
running one, so most tests share one process.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.harness.process import LOOPBACK, ManagedProcess, wait_until

MAILGLUE = str(Path(sys.executable).with_name("mailglue"))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class ScanMilter:
    def __init__(self, root: Path, port: int, base_config: dict[str, Any]) -> None:
        self.root = root
        self.port = port
        self.log_path = root / "milter.stderr.log"
        self.events_path = root / "milter.json"
        self.config_path = root / "milter.yaml"
        self.base_config = merge(
            base_config,
            {
                "milter": {"listen": f"inet:{LOOPBACK}:{port}"},
                "log": {"file": str(self.events_path)},
            },
        )
        self.current: dict[str, Any] | None = None
        self.process: ManagedProcess | None = None
        root.mkdir(parents=True, exist_ok=True)

    def ensure(self, override: dict[str, Any] | None = None) -> None:
        wanted = merge(self.base_config, override or {})
        if wanted == self.current and self.process is not None and self.process.running():
            return
        self.stop()
        self.config_path.write_text(yaml.safe_dump(wanted))
        self.process = ManagedProcess(
            "mailglue-milter",
            [MAILGLUE, "milter", "--config", str(self.config_path)],
            self.log_path,
        )
        self.process.start()
        self.process.wait_ready((LOOPBACK, self.port), timeout=20)
        self.current = wanted

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop([(LOOPBACK, self.port)])
            self.process = None
            self.current = None

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines() if line]

    def transaction(
        self, value: str, timeout: float = 10, key: str = "message_id"
    ) -> dict[str, Any]:
        """The logged transaction event of one message (by Message-ID or `key`), waiting."""
        found: list[dict[str, Any]] = []

        def logged() -> bool:
            found[:] = [
                e for e in self.events() if e.get("event") == "transaction" and e.get(key) == value
            ]
            return bool(found)

        wait_until(logged, timeout, f"milter log event with {key} {value}")
        return found[-1]


def wait_for(predicate: Any, timeout: float = 20, interval: float = 0.1) -> Any:
    """Poll until `predicate()` returns something truthy; return it (or the last falsy value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
