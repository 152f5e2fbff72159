"""Decode a response body chunk by chunk, refusing it once the DECODED size passes a cap.

httpx's own decoders inflate a whole network chunk at once (a 64 KiB gzip chunk can become 64 MiB), so we
read raw bytes and inflate with zlib's max_length: memory never holds more than cap + one byte of output.
We only advertise and decode gzip and deflate; any other Content-Encoding is handed back undecoded.
"""

from __future__ import annotations

import zlib


class BodyTooLarge(Exception):
    """The decoded body passed the cap."""


class BodyDecodeError(Exception):
    """The body claims an encoding it does not have."""


class CappedDecoder:
    """Feed raw chunks, get decoded bytes; raises BodyTooLarge past `limit` decoded bytes."""

    def __init__(self, content_encoding: str, limit: int) -> None:
        self.limit = limit
        self.total = 0
        encoding = content_encoding.strip().lower()
        self.decodes = encoding in ("", "identity", "gzip", "x-gzip", "deflate")
        self._mode = encoding if self.decodes else "identity"
        self._inflater: zlib._Decompress | None = None  # type: ignore[name-defined]
        self._first = True
        if self._mode in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self._mode == "deflate":
            self._inflater = zlib.decompressobj()

    def _count(self, size: int) -> None:
        self.total += size
        if self.total > self.limit:
            raise BodyTooLarge()

    def _inflate(self, data: bytes) -> bytes:
        assert self._inflater is not None
        out = bytearray()
        while data:
            piece = self._inflater.decompress(data, self.limit - self.total + 1)
            self._count(len(piece))
            out += piece
            data = self._inflater.unconsumed_tail
            if self._inflater.eof:
                break  # trailing bytes after the stream end are ignored, as browsers do
        return bytes(out)

    def feed(self, chunk: bytes) -> bytes:
        """Decoded bytes for one raw chunk."""
        if self._inflater is None:
            self._count(len(chunk))
            return chunk
        try:
            if self._first and self._mode == "deflate":
                self._first = False
                try:
                    return self._inflate(chunk)
                except zlib.error:
                    # "deflate" in the wild is often raw DEFLATE without the zlib header.
                    self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                    self.total = 0
            return self._inflate(chunk)
        except zlib.error as exc:
            raise BodyDecodeError(str(exc)) from exc

    def finish(self) -> bytes:
        """Whatever the inflater still holds at the end of the body."""
        if self._inflater is None:
            return b""
        try:
            tail = self._inflater.flush()
        except zlib.error as exc:
            raise BodyDecodeError(str(exc)) from exc
        self._count(len(tail))
        return tail
