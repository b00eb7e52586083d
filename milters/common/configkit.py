"""Reading a YAML config into typed values, with errors that name the file and the key.

Every daemon's config module walks its YAML through a `ConfigReader`. The reader collects
every problem instead of stopping at the first, so an admin fixes a broken file in one pass,
and it refuses keys it does not know, so a typo (`tag_abov`) is an error, not a silent default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import yaml

from milters.common.sockets import BackendAddressError, InetAddress, parse_address

Number = TypeVar("Number", int, float)


class ConfigError(Exception):
    """One or more problems in a config file; `str()` lists them one per line."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def load_yaml(path: str | Path) -> tuple[str, Any]:
    """Parse a YAML file; syntax errors become a ConfigError naming the file and line."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{source}: not valid YAML{where}: {problem}"]) from exc
    return source, ({} if data is None else data)


class ConfigReader:
    """Typed accessors over one mapping of a YAML document, remembering which keys were read."""

    def __init__(
        self,
        source: str,
        data: Any,
        path: str = "",
        problems: list[str] | None = None,
    ) -> None:
        self.source = source
        self.path = path
        self.problems: list[str] = [] if problems is None else problems
        self._seen: set[str] = set()
        if isinstance(data, Mapping):
            self._data: Mapping[str, Any] = data
        else:
            self._data = {}
            self.problems.append(f"{source}: {path or 'top level'}: must be a mapping")

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.source}: key '{self.key_path(key)}': {message}")

    def has(self, key: str) -> bool:
        return key in self._data

    def _get(self, key: str) -> Any:
        self._seen.add(key)
        return self._data.get(key)

    def section(self, key: str) -> ConfigReader:
        value = self._get(key)
        return ConfigReader(
            self.source, {} if value is None else value, self.key_path(key), self.problems
        )

    def sections(self, key: str) -> list[ConfigReader]:
        """A list of mappings (e.g. `domains:`), each read like a section: `key[0]`, `key[1]`."""
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(key, f"must be a list, got {value!r}")
            return []
        return [
            ConfigReader(self.source, item, f"{self.key_path(key)}[{i}]", self.problems)
            for i, item in enumerate(value)
        ]

    def text(self, key: str, default: str) -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            self.problem(key, f"must be a non-empty string, got {value!r}")
            return default
        return value

    def optional_text(self, key: str) -> str | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.problem(key, f"must be a non-empty string, got {value!r}")
            return None
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(key, f"must be true or false, got {value!r}")
            return default
        return value

    def integer(
        self, key: str, default: int, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, f"must be a whole number, got {value!r}")
            return default
        return self._bounded(key, value, default, minimum, maximum)

    def seconds(
        self, key: str, default: float, minimum: float = 0.001, maximum: float | None = None
    ) -> float:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(key, f"must be a number of seconds, got {value!r}")
            return default
        return self._bounded(key, float(value), default, minimum, maximum)

    def decimal(self, key: str, default: Decimal) -> Decimal:
        """Scores are read as Decimal from the YAML text so 3.0 stays exactly 3.0."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.problem(key, f"must be a number, got {value!r}")
            return default
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            self.problem(key, f"must be a number, got {value!r}")
            return default
        if not number.is_finite():
            self.problem(key, f"must be a finite number, got {value!r}")
            return default
        return number

    def choice(self, key: str, default: str, choices: Iterable[str]) -> str:
        allowed = tuple(choices)
        value = self._get(key)
        if value is None:
            return default
        if value not in allowed:
            self.problem(key, f"must be one of {', '.join(allowed)}; got {value!r}")
            return default
        return str(value)

    def text_list(self, key: str, default: Iterable[str]) -> tuple[str, ...]:
        value = self._get(key)
        if value is None:
            return tuple(default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem(key, f"must be a list of non-empty strings, got {value!r}")
            return tuple(default)
        return tuple(value)

    def mapping(self, key: str) -> dict[str, str]:
        value = self._get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.problem(key, f"must be a mapping of strings to strings, got {value!r}")
            return {}
        return dict(value)

    def finish(self) -> None:
        """Report keys present in the file that no accessor asked for (typos, stale keys)."""
        for key in self._data:
            if key not in self._seen:
                self.problem(str(key), "unknown key")

    def finish_document(self) -> None:
        """At the top level, once every section was read: unknown keys, then every problem
        of the whole file at once as a ConfigError."""
        self.finish()
        if self.problems:
            raise ConfigError(self.problems)

    def _bounded(
        self,
        key: str,
        value: Number,
        default: Number,
        minimum: Number | None,
        maximum: Number | None,
    ) -> Number:
        if minimum is not None and value < minimum:
            self.problem(key, f"must be at least {minimum}, got {value}")
            return default
        if maximum is not None and value > maximum:
            self.problem(key, f"must be at most {maximum}, got {value}")
            return default
        return value


def log_file(top: ConfigReader) -> str | None:
    """The `log:` section every config shares: its `file` (absent: the program logs to a stream)."""
    log = top.section("log")
    path = log.optional_text("file")
    log.finish()
    return path


def metrics_address(reader: ConfigReader, key: str) -> InetAddress | None:
    """`127.0.0.1:9898` (or `inet:127.0.0.1:9898`): where Prometheus scrapes; absent = off.

    Only TCP: prometheus_client serves HTTP on a TCP port. Not restricted to loopback, because
    a scanner pool may be scraped from another host, but the README says to keep it local.
    """
    text = reader.optional_text(key)
    if text is None:
        return None
    try:
        address = parse_address(text if text.startswith(("inet:", "unix:")) else f"inet:{text}")
    except BackendAddressError as exc:
        reader.problem(key, str(exc))
        return None
    if not isinstance(address, InetAddress):
        reader.problem(key, f"must be HOST:PORT (HTTP over TCP), got {text!r}")
        return None
    return address
