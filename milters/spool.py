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
from typing import BinaryIO


class Spool:
    def __init__(self, memory_limit: int, directory: str | None = None) -> None:
        self.memory_limit = memory_limit
        self.directory = directory
        self.size = 0
        self.digest = hashlib.sha256()  # of the body, for a content-derived Message-ID
        self._memory = bytearray()
        self._file: BinaryIO | None = None
        self._path: str | None = None

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.digest.update(chunk)
        if self._file is None and len(self._memory) + len(chunk) <= self.memory_limit:
            self._memory += chunk
            return
        if self._file is None:
            fd, self._path = tempfile.mkstemp(prefix="mailglue-", dir=self.directory)
            self._file = os.fdopen(fd, "wb")
            self._file.write(self._memory)
            self._memory = bytearray()
        self._file.write(chunk)

    def reader(self) -> BinaryIO:
        """A new, independent reader positioned at the start."""
        if self._file is None:
            return io.BytesIO(bytes(self._memory))
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
        self.size = 0
