"""clamd INSTREAM reply parsing."""

import pytest

from milters.scanners.clamd import ClamdError, ClamdSizeLimit, frame, parse_reply


def test_clean_and_found() -> None:
    assert parse_reply(b"stream: OK\0") is None
    assert parse_reply(b"stream: Eicar-Test-Signature FOUND\0") == "Eicar-Test-Signature"
    assert parse_reply(b"stream: Clam.Test.UNOFFICIAL FOUND\0") == "Clam.Test.UNOFFICIAL"


def test_size_limit_is_its_own_error() -> None:
    with pytest.raises(ClamdSizeLimit):
        parse_reply(b"INSTREAM size limit exceeded. ERROR\0")


@pytest.mark.parametrize("reply", [b"", b"stream: Can't allocate memory ERROR\0", b"garbage"])
def test_other_errors(reply: bytes) -> None:
    with pytest.raises(ClamdError):
        parse_reply(reply)


def test_frame_is_length_prefixed() -> None:
    assert frame(b"abc") == b"\0\0\0\x03abc"
    assert frame(b"") == b"\0\0\0\0"
