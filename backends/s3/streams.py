"""Bytes in and out of S3: the buffered head of an upload, and a response body read as a stream that
fills each read and never ends early (a body cut short raises TransientError)."""

from __future__ import annotations

import io
import re
from typing import BinaryIO, Iterator

from ..base import check_key
from ..errors import InvalidKey, TransientError
from .errors import SDK_ERRORS, translate_error
from .options import READ_BLOCK

_HEX32 = re.compile(r"[0-9a-f]{32}")


def md5_of_etag(etag: str | None) -> str | None:
    """The ETag as an MD5 hint: S3's ETag of an object stored by one PutObject without SSE-KMS or
    SSE-C is its MD5; other ETags (multipart ``...-N``) are left out, the rest are hints only."""
    value = (etag or "").strip('"').lower()
    return value if _HEX32.fullmatch(value) else None


def etag(value: str | None) -> str | None:
    return value.strip('"') if value else None


def pieces_up_to(stream: BinaryIO, limit: int) -> Iterator[bytes]:
    """The stream's next bytes in pieces, until ``limit`` bytes or EOF; errors of the stream propagate unchanged."""
    remaining = limit
    while remaining > 0:
        piece = stream.read(min(remaining, READ_BLOCK))
        if not piece:
            return
        yield piece
        remaining -= len(piece)


def read_up_to(stream: BinaryIO, limit: int) -> bytes:
    """Read until ``limit`` bytes or EOF; errors of the stream propagate unchanged."""
    return b"".join(pieces_up_to(stream, limit))


def is_folder_marker(key: str, size: int) -> bool:
    """A zero-byte object named like a directory (``a/b/``, or the listed prefix itself: ``""``), as
    S3 consoles create for "folders": no object of a registry's, skipped like a directory's own entry."""
    if size != 0:
        return False
    if key == "":
        return True
    try:
        return key.endswith("/") and bool(check_key(key[:-1]))
    except InvalidKey:
        return False


class Prepended:
    """``head`` followed by the rest of ``stream``, read through ``read(n)``."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = memoryview(head)
        self._stream = stream

    def read(self, size: int) -> bytes:
        if self._head:
            piece, self._head = bytes(self._head[:size]), self._head[size:]
            return piece
        return self._stream.read(size)


class ObjectReader(io.RawIOBase):
    """An object's bytes as a stream: the response body, with errors translated.

    ``read(n)`` returns ``n`` bytes unless the object ends first. An answer
    that ends before its announced ``length`` (a truncated response; botocore
    notices only at its next read, and not in every case) raises
    TransientError: a short read is a failed read, never the object's end.
    """

    def __init__(self, body, key: str, length: int | None) -> None:
        self._body = body
        self._key = key
        self._length = length
        self._received = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        pieces: list[bytes] = []
        remaining = size
        while remaining > 0:
            piece = self._read_once(remaining)
            if not piece:
                break
            pieces.append(piece)
            remaining -= len(piece)
        return b"".join(pieces)

    def readall(self) -> bytes:
        pieces: list[bytes] = []
        while piece := self._read_once(READ_BLOCK):
            pieces.append(piece)
        return b"".join(pieces)

    def _read_once(self, size: int) -> bytes:
        try:
            piece = self._body.read(size)
        except SDK_ERRORS as exc:
            raise translate_error(exc, self._key) from exc
        self._received += len(piece)
        if not piece and size > 0 and self._length is not None and self._received < self._length:
            raise TransientError(
                f"{self._key}: the answer ended after {self._received} of its {self._length} bytes (cut short in transit; read again)",
                key=self._key,
            )
        return piece

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
