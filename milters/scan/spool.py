"""The message body as it arrives, in memory while small and in a temporary file beyond that.

clamd and spamd read the same copy at the same time, so readers are opened independently;
a 50 MB message then lives once on disk rather than several times in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import threading
from typing import BinaryIO

from milters.common.sockets import PIECE


class Spool:
    def __init__(self, memory_limit: int, directory: str | None = None) -> None:
        self.memory_limit = memory_limit
        self.directory = directory
        self.size = 0
        self.eight_bit = False  # any byte above 127 so far (decides LMTP BODY=8BITMIME)
        self._memory = bytearray()
        self._frozen: bytes | None = None  # the body in memory as one object all readers share
        self._freezing = threading.Lock()
        self._file: BinaryIO | None = None
        self._path: str | None = None
        self._digest: bytes | None = None  # body_digest(), once the body is complete

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def write(self, chunk: bytes) -> None:
        self._digest = None
        if self._frozen is not None:  # more body after a reader was opened
            self._memory = bytearray(self._frozen)
            self._frozen = None
        self.size += len(chunk)
        if not self.eight_bit and not chunk.isascii():
            self.eight_bit = True
        if self._file is None and len(self._memory) + len(chunk) <= self.memory_limit:
            self._memory += chunk
            return
        if self._file is None:
            fd, self._path = tempfile.mkstemp(prefix="mailglue-", dir=self.directory)
            self._file = os.fdopen(fd, "wb")
            self._file.write(self._memory)
            self._memory = bytearray()
        self._file.write(chunk)

    def body_digest(self) -> bytes:
        """SHA-256 of the body, for the scan memo's key and a content-derived Message-ID.

        Computed on demand, once: only messages the memo may know (not above spam.max_size)
        or without a Message-ID need it, and hashing every body as it arrives would cost a
        10 MB message some 20 ms of CPU for nothing.
        """
        if self._digest is None:
            digest = hashlib.sha256()
            with self.reader() as body:
                while chunk := body.read(PIECE):
                    digest.update(chunk)
            self._digest = digest.digest()
        return self._digest

    def memory(self) -> bytes:
        """The body, while it is held in memory (b"" once it went to disk).

        Frozen into one bytes object that every reader shares (io.BytesIO does not copy it):
        clamd, spamd, the sender checks and LMTP each read the body, and each used to get a
        copy of its own.
        """
        with self._freezing:  # clamd's and spamd's threads open their readers at once
            if self._frozen is None:
                self._frozen = bytes(self._memory)
                self._memory = bytearray()
            return self._frozen

    def reader(self) -> BinaryIO:
        """A new, independent reader positioned at the start."""
        if self._file is None:
            return io.BytesIO(self.memory())
        self._file.flush()
        assert self._path is not None
        return open(self._path, "rb")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            self._path = None
        self._memory = bytearray()
        self._frozen = None
        self.size = 0
        self.eight_bit = False


class _Chain(io.RawIOBase):
    """`prefix` followed by a seekable reader, as one seekable read-only stream."""

    def __init__(self, prefix: bytes, rest: BinaryIO, rest_size: int) -> None:
        self._prefix = prefix
        self._rest = rest
        self._size = len(prefix) + rest_size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._pos < len(self._prefix):
            data = self._prefix[self._pos : self._pos + len(view)]
        else:
            self._rest.seek(self._pos - len(self._prefix))
            data = self._rest.read(len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._rest.close()
        super().close()


def message_stream(prefix: bytes, spool: Spool) -> BinaryIO:
    """Headers + the spooled body as one seekable stream, without copying a large body."""
    if not spool.on_disk:
        return io.BytesIO(prefix + spool.memory())
    return io.BufferedReader(_Chain(prefix, spool.reader(), spool.size))
