"""Passwords in configuration: one type, one reading rule, for every daemon and job.

A `Secret` prints as a mask, so neither `check-config` nor a log line can show it by
accident. `read_secret` is the only reader: a password is given inline or in a file (not
both); from a file only the line ending is dropped (a password may start or end with a
space), and an empty one is refused.
"""

from __future__ import annotations

from pathlib import Path

from milters.common.configkit import ConfigReader

__all__ = ["Secret", "read_secret"]


class Secret:
    """A value that prints as a mask; `reveal()` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "********"

    def __repr__(self) -> str:
        return "Secret('********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self  # immutable; lets dataclasses.asdict() keep the mask


def read_secret(reader: ConfigReader, inline_key: str, file_key: str) -> Secret | None:
    """The password under `inline_key`, or in the file named by `file_key`; None if neither."""
    inline = reader.optional_text(inline_key)
    path = reader.optional_text(file_key)
    if inline is not None and path is not None:
        reader.problem(file_key, f"give {inline_key} or {file_key}, not both")
        return None
    if path is None:
        return None if inline is None else Secret(inline)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        reader.problem(file_key, f"cannot read {path}: {exc.strerror or exc}")
        return None
    secret = text.rstrip("\r\n")
    if not secret:
        reader.problem(file_key, f"{path} is empty")
        return None
    return Secret(secret)
