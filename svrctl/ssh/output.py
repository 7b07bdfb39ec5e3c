"""Bounded capture of command output, and splitting a byte stream into lines."""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BoundedBuffer", "Captured", "LineSplitter"]

MAX_LINE_CHARS = 4096


@dataclass(frozen=True)
class Captured:
    """What was kept of one output stream."""

    text: str
    truncated: bool
    total_bytes: int


class BoundedBuffer:
    """Keep at most ``limit`` bytes of a stream: all of it, or its head and tail."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 2)
        self.total = 0
        self._head = bytearray()
        self._tail = bytearray()
        self._head_size = self.limit // 2
        self._tail_size = self.limit - self._head_size

    def write(self, data: bytes) -> None:
        """Add a chunk of the stream."""
        self.total += len(data)
        room = self._head_size - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            # Trim in batches so each chunk is not a full copy of the tail.
            if len(self._tail) > 2 * self._tail_size:
                del self._tail[: len(self._tail) - self._tail_size]

    def result(self) -> Captured:
        """Return the kept text, with a marker where bytes were left out."""
        kept = len(self._head) + min(len(self._tail), self._tail_size)
        if self.total <= self.limit:
            return Captured(_decode(bytes(self._head + self._tail)), False, self.total)
        tail = bytes(self._tail[-self._tail_size :])
        omitted = self.total - kept
        marker = f"\n[… {omitted} bytes omitted: output limit {self.limit} bytes …]\n"
        return Captured(_decode(bytes(self._head)) + marker + _decode(tail), True, self.total)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


class LineSplitter:
    """Feed bytes, get whole decoded lines through a callback; very long lines are cut."""

    def __init__(self, emit: Callable[[str], None], max_chars: int = MAX_LINE_CHARS) -> None:
        self._emit = emit
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._max = max_chars

    def feed(self, data: bytes) -> None:
        """Add bytes; emit every line they complete, in pieces of at most ``max_chars``."""
        text = self._pending + self._decoder.decode(data)
        *lines, self._pending = text.split("\n")
        for line in lines:
            self._emit_cut(line.rstrip("\r"))
        # Cut an unfinished long line now, so memory stays bounded; a trailing "\r" may
        # still be the start of "\r\n", so it does not count (the pieces are then the
        # same however the stream was chunked).
        while len(self._pending.rstrip("\r")) > self._max or len(self._pending) > 2 * self._max:
            self._emit(self._pending[: self._max])
            self._pending = self._pending[self._max :]

    def close(self) -> None:
        """Emit the last, unterminated line if there is one."""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if rest:
            self._emit_cut(rest.rstrip("\r"))

    def _emit_cut(self, line: str) -> None:
        while len(line) > self._max:
            self._emit(line[: self._max])
            line = line[self._max :]
        self._emit(line)
