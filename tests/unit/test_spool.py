"""The spool keeps small messages in memory and large ones on disk, readable twice at once."""

import hashlib
import tracemalloc
from pathlib import Path

import pytest

from milters.scan.spool import Spool, message_stream


def test_small_stays_in_memory(tmp_path: Path) -> None:
    spool = Spool(memory_limit=10, directory=str(tmp_path))
    spool.write(b"hello")
    assert not spool.on_disk and list(tmp_path.iterdir()) == []
    with spool.reader() as one, spool.reader() as two:
        assert one.read() == two.read() == b"hello"


def test_large_goes_to_disk_and_is_removed_on_close(tmp_path: Path) -> None:
    spool = Spool(memory_limit=10, directory=str(tmp_path))
    spool.write(b"0123456789")
    spool.write(b"abc")
    assert spool.on_disk and spool.size == 13
    with spool.reader() as one, spool.reader() as two:
        assert one.read(4) == b"0123"
        assert two.read() == b"0123456789abc"
        assert one.read() == b"456789abc"
    spool.close()
    assert list(tmp_path.iterdir()) == []


def test_message_stream_chains_headers_and_body(tmp_path: Path) -> None:
    spool = Spool(memory_limit=4, directory=str(tmp_path))
    spool.write(b"body line\r\n")
    with message_stream(b"H: v\r\n\r\n", spool) as stream:
        assert stream.seekable()
        assert stream.read() == b"H: v\r\n\r\nbody line\r\n"
        assert stream.seek(0, 2) == 19
        stream.seek(3)
        assert stream.read(5) == b"v\r\n\r\nb"[:5]
        stream.seek(0)
        assert stream.read() == b"H: v\r\n\r\nbody line\r\n"


@pytest.mark.parametrize("memory_limit", [0, 1 << 20])
def test_eight_bit_is_noticed_in_any_chunk(tmp_path: Path, memory_limit: int) -> None:
    spool = Spool(memory_limit, str(tmp_path))
    spool.write(b"plain ascii\r\n")
    assert not spool.eight_bit
    spool.write("caf\u00e9\r\n".encode())
    spool.write(b"ascii again\r\n")
    assert spool.eight_bit
    spool.close()
    assert not spool.eight_bit


@pytest.mark.parametrize("memory_limit", [0, 1 << 20])
def test_message_stream_is_the_same_in_memory_and_on_disk(
    tmp_path: Path, memory_limit: int
) -> None:
    spool = Spool(memory_limit, str(tmp_path))
    for part in (b"line one\r\n", b".dot\r\n", b"end\r\n"):
        spool.write(part)
    assert spool.on_disk is (memory_limit == 0)
    with message_stream(b"Subject: x\r\n\r\n", spool) as stream:
        assert stream.read() == b"Subject: x\r\n\r\nline one\r\n.dot\r\nend\r\n"
        stream.seek(0)
        assert stream.read(9) == b"Subject: "
    spool.close()


@pytest.mark.parametrize("memory_limit", [0, 1 << 20])
def test_body_digest_covers_the_whole_body(tmp_path: Path, memory_limit: int) -> None:
    spool = Spool(memory_limit, str(tmp_path))
    for part in (b"first\r\n", b"second\r\n"):
        spool.write(part)
    assert spool.body_digest() == hashlib.sha256(b"first\r\nsecond\r\n").digest()
    spool.close()


def test_the_body_digest_is_computed_once_and_follows_new_data() -> None:
    spool = Spool(memory_limit=1 << 20)
    spool.write(b"hello\r\n")
    first = spool.body_digest()
    assert spool.body_digest() is first  # the memo's key and the Message-ID share one hash
    spool.write(b"more\r\n")
    assert spool.body_digest() != first


def test_readers_of_a_body_in_memory_share_one_copy() -> None:
    """clamd, spamd, the sender checks and LMTP each open a reader; each used to get its own
    copy of the body."""
    body = b"x" * (1 << 20)
    spool = Spool(memory_limit=2 << 20)
    spool.write(body[: 1 << 19])
    spool.write(body[1 << 19 :])
    tracemalloc.start()
    try:
        readers = [spool.reader() for _ in range(3)]
        contents = [reader.read() for reader in readers]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert contents == [body] * 3
    assert peak < (1 << 20) + (64 << 10)  # the body once (the buffer frozen), not once per reader


def test_writing_after_a_reader_was_opened_keeps_every_byte() -> None:
    spool = Spool(memory_limit=16)
    spool.write(b"one\r\n")
    with spool.reader() as early:
        assert early.read() == b"one\r\n"
    spool.write(b"two\r\n")
    assert spool.memory() == b"one\r\ntwo\r\n"
    spool.write(b"three and more\r\n")  # past the limit: to disk, with what came before
    assert spool.on_disk
    with spool.reader() as late:
        assert late.read() == b"one\r\ntwo\r\nthree and more\r\n"
    spool.close()
