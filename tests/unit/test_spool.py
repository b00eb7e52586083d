"""The spool keeps small messages in memory and large ones on disk, readable twice at once."""

from pathlib import Path

from milters.spool import Spool, message_stream


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
