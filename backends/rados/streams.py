"""The streams of a put and a read: the caller's source read in full pieces, and a chunked object
read in bounded requests."""

from __future__ import annotations

import io
from typing import Any, BinaryIO

from ..errors import BackendError, TransientError
from .errors import translating
from .layout import Head, chunk_oid


class Source:
    """The caller's stream, read in full pieces; its errors propagate untranslated."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._eof = False

    def read(self, size: int) -> bytes:
        parts, wanted = [], size
        while wanted > 0 and not self._eof:
            part = self._stream.read(wanted)
            if not part:
                self._eof = True
                break
            parts.append(part)
            wanted -= len(part)
        return b"".join(parts)


class ChunkReader(io.RawIOBase):
    """Reads a chunked object in requests of at most ``request`` bytes."""

    def __init__(self, ioctx: Any, key: str, head: Head, request: int) -> None:
        self._ioctx = ioctx
        self._key = key
        self._head = head
        self._request = request
        self._pos = 0

    def readable(self) -> bool:
        return True

    def _next(self, limit: int) -> bytes:
        """Up to ``limit`` bytes from the current position, within one chunk; b"" at the end."""
        head = self._head
        if self._pos >= head.size:
            return b""
        number, offset = divmod(self._pos, head.chunk_size)
        wanted = min(limit, head.chunk_size - offset, head.size - self._pos, self._request)
        with translating(self._key, missing=TransientError, what="replaced or deleted while being read; read again"):
            data = self._ioctx.read(chunk_oid(head.gen, number), wanted, offset)
        if len(data) != wanted:
            raise BackendError(f"{self._key}: chunk {number} holds fewer bytes than its head says", key=self._key)
        self._pos += wanted
        return data

    def readinto(self, buffer) -> int:
        data = self._next(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        parts = []
        while data := self._next(self._request):
            parts.append(data)
        return b"".join(parts)
