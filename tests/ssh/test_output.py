"""Bounded capture, line splitting and the marker filter, byte for byte (no server needed)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from svrctl.ssh.exec import _StreamFilter
from svrctl.ssh.output import MAX_LINE_CHARS, BoundedBuffer, Captured, LineSplitter
from svrctl.ssh.remote import PID_MARKER, SUDO_PROMPT

PROMPT = SUDO_PROMPT.encode()

# ------------------------------------------------------------------------- helpers


def _chunks(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    """Cut ``data`` into pieces of the given sizes, cycling through them."""
    i = 0
    n = 0
    while i < len(data):
        size = sizes[n % len(sizes)]
        yield data[i : i + size]
        i += size
        n += 1


def _capture(data: bytes, limit: int, sizes: list[int]) -> Captured:
    buffer = BoundedBuffer(limit)
    for chunk in _chunks(data, sizes):
        buffer.write(chunk)
    return buffer.result()


def _ascii(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789\n") for _ in range(n))


def _split_lines(chunks: list[bytes], max_chars: int = MAX_LINE_CHARS) -> list[str]:
    lines: list[str] = []
    splitter = LineSplitter(lines.append, max_chars=max_chars)
    for chunk in chunks:
        splitter.feed(chunk)
    splitter.close()
    return lines


def _filtered(chunks: list[bytes]) -> tuple[bytes, _StreamFilter]:
    stream = _StreamFilter()
    out = b"".join(stream.feed(chunk) for chunk in chunks) + stream.flush()
    return out, stream


def _splits(data: bytes) -> Iterator[list[bytes]]:
    """Every way to cut ``data`` into two pieces, and every way into three."""
    n = len(data)
    for i in range(n + 1):
        yield [data[:i], data[i:]]
    for i in range(n + 1):
        for j in range(i, n + 1):
            yield [data[:i], data[i:j], data[j:]]


# ------------------------------------------------------------------- BoundedBuffer


@pytest.mark.parametrize("total", [0, 1, 99, 100])
@pytest.mark.parametrize("sizes", [[1], [7], [100], [3, 50, 1]])
def test_output_within_the_limit_is_kept_byte_exact(total: int, sizes: list[int]) -> None:
    data = _ascii(total)
    captured = _capture(data, 100, sizes)
    assert captured == Captured(data.decode(), False, total)


@pytest.mark.parametrize("limit", [100, 101, 2])
@pytest.mark.parametrize("extra", [1, 2, 57, 100, 1000, 12345])
@pytest.mark.parametrize("sizes", [[1], [7], [64], [1000], [100_000], [5, 300, 2, 77]])
def test_output_over_the_limit_keeps_exact_head_and_tail(
    limit: int, extra: int, sizes: list[int]
) -> None:
    data = _ascii(limit + extra, seed=extra)
    captured = _capture(data, limit, sizes)
    head, tail = limit // 2, limit - limit // 2
    marker = f"\n[… {extra} bytes omitted: output limit {limit} bytes …]\n"
    assert captured.truncated
    assert captured.total_bytes == limit + extra
    assert captured.text == data[:head].decode() + marker + data[-tail:].decode()


def test_many_small_writes_equal_one_big_write() -> None:
    rng = random.Random(7)
    data = bytes(rng.randrange(256) for _ in range(50_000))  # not valid UTF-8 either
    for limit in (10, 999, 4096, 49_999, 50_000, 60_000):
        whole = _capture(data, limit, [len(data)])
        for _ in range(5):
            sizes = [rng.randrange(1, 3000) for _ in range(20)]
            assert _capture(data, limit, sizes) == whole, (limit, sizes)


def test_a_huge_stream_keeps_only_about_the_limit_in_memory() -> None:
    buffer = BoundedBuffer(1000)
    chunk = b"x" * 65536
    for _ in range(200):  # 13 MB
        buffer.write(chunk)
        assert len(buffer._head) + len(buffer._tail) <= 1000 + 65536 * 2
    assert buffer.result().total_bytes == 200 * 65536


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    captured = _capture(b"\xff\xfe ok \xc3", 100, [1])
    assert captured.text == "\ufffd\ufffd ok \ufffd"
    assert captured.total_bytes == 7


def test_multibyte_characters_whole_within_the_limit() -> None:
    data = "é€😀\n".encode() * 10  # 10 bytes a line
    assert _capture(data, 100, [1]).text == data.decode()


# -------------------------------------------------------------------- LineSplitter


def test_lines_split_across_chunk_boundaries() -> None:
    data = b"alpha\nbeta\n\ngamma\ndelta"
    expected = ["alpha", "beta", "", "gamma", "delta"]
    for chunks in _splits(data):
        assert _split_lines(chunks) == expected, chunks
    assert _split_lines([bytes([b]) for b in data]) == expected


def test_crlf_line_endings_are_stripped_even_when_split() -> None:
    data = b"one\r\ntwo\r\nin\rside\r\n"
    for chunks in _splits(data):
        assert _split_lines(chunks) == ["one", "two", "in\rside"], chunks


def test_close_emits_the_unterminated_last_line_only() -> None:
    assert _split_lines([b"a\nb"]) == ["a", "b"]
    assert _split_lines([b"a\n"]) == ["a"]
    assert _split_lines([]) == []
    assert _split_lines([b"last\r"]) == ["last"]


def test_lines_are_emitted_as_soon_as_they_are_complete() -> None:
    lines: list[str] = []
    splitter = LineSplitter(lines.append)
    splitter.feed(b"first\nsec")
    assert lines == ["first"]
    splitter.feed(b"ond\n")
    assert lines == ["first", "second"]


@pytest.mark.parametrize("length", [9, 10, 11, 25, 30])
@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_long_lines_are_cut_the_same_however_they_arrive(length: int, ending: bytes) -> None:
    line = bytes(ord("a") + i % 26 for i in range(length))
    text = line.decode()
    expected = [text[i : i + 10] for i in range(0, length, 10)]
    if ending == b"\r":  # the last line, cut off by the end of the stream
        data = line + ending
    else:
        data = line + ending + b"next\n"
        expected.append("next")
    assert _split_lines([data], max_chars=10) == expected
    for chunks in _splits(data):
        assert _split_lines(chunks, max_chars=10) == expected, chunks


def test_an_endless_line_is_cut_while_it_streams() -> None:
    lines: list[str] = []
    splitter = LineSplitter(lines.append, max_chars=100)
    for _ in range(50):
        splitter.feed(b"x" * 64)
    assert lines == ["x" * 100] * 31  # 3200 chars: 100 still pending, it may go on
    splitter.close()
    assert lines == ["x" * 100] * 32


def test_default_cut_is_max_line_chars() -> None:
    lines = _split_lines([b"y" * (MAX_LINE_CHARS * 2 + 5) + b"\n"])
    assert [len(line) for line in lines] == [MAX_LINE_CHARS, MAX_LINE_CHARS, 5]


@pytest.mark.parametrize("char", ["é", "€", "😀"])
def test_multibyte_characters_split_across_chunks_decode_correctly(char: str) -> None:
    data = f"a{char}b{char}\n{char}".encode()
    expected = [f"a{char}b{char}", char]
    for chunks in _splits(data):
        assert _split_lines(chunks) == expected, chunks


def test_invalid_utf8_in_lines_is_replaced() -> None:
    assert _split_lines([b"\xff", b"\xfe ok\n", b"x\xc3"]) == ["\ufffd\ufffd ok", "x\ufffd"]


# ------------------------------------------------------------ marker filter (exec)

PID_LINE = PID_MARKER + b"48213\n"


def test_pid_line_split_anywhere_is_removed_and_read() -> None:
    data = PID_LINE + b"hello\n"
    for chunks in _splits(data):
        out, stream = _filtered(chunks)
        assert out == b"hello\n", chunks
        assert stream.pid == 48213, chunks


def test_pid_line_from_a_pty_with_crlf() -> None:
    data = b"before" + PID_MARKER + b"7\r\nafter"
    for chunks in _splits(data):
        out, stream = _filtered(chunks)
        assert (out, stream.pid) == (b"beforeafter", 7), chunks


def test_only_the_first_pid_line_is_taken() -> None:
    data = PID_LINE + PID_MARKER + b"666\n"
    for chunks in _splits(data):
        out, stream = _filtered(chunks)
        assert out == PID_MARKER + b"666\n"
        assert stream.pid == 48213


def test_sudo_prompt_split_anywhere_is_removed_and_counted() -> None:
    data = b"Password check\n" + PROMPT + b"\nok\n"
    for chunks in _splits(data):
        out, stream = _filtered(chunks)
        assert out == b"Password check\n\nok\n", chunks
        assert stream.prompts == 1, chunks


def test_sudo_prompt_is_counted_as_soon_as_its_last_byte_arrives() -> None:
    # sudo prints the prompt and then waits: nothing more comes until it is answered.
    for i in range(len(PROMPT)):
        stream = _StreamFilter()
        assert stream.feed(b"x" + PROMPT[:i]) == b"x"
        assert stream.prompts == 0
        assert stream.feed(PROMPT[i:]) == b""
        assert stream.prompts == 1, i


def test_two_prompts_and_a_pid_line_together() -> None:
    data = PID_LINE + PROMPT + b"Sorry, try again.\n" + PROMPT + b"0\n"
    for chunks in _splits(data):
        out, stream = _filtered(chunks)
        assert out == b"Sorry, try again.\n0\n"
        assert (stream.pid, stream.prompts) == (48213, 2)


@pytest.mark.parametrize(
    "data",
    [
        b"a\x1eb",
        b"\x1e",
        b"\x1e\x1e\x1e",
        b"x\x1e",
        b"\x1esvrctl",
        b"\x1esvrctl-pid",
        b"\x1esvrctl-pid \n",
        b"\x1esvrctl-pid x\n",
        b"\x1esvrctl-pid 12",
        b"\x1esvrctl-pid 123456789012345678901234567890",
        b"\x1esvrctl-sudo-prompt",
        b"\x1esvrctl-sudo-prompt!",
        b"record\x1eseparated\x1evalues\n",
    ],
)
def test_other_record_separators_pass_through_unchanged(data: bytes) -> None:
    for chunks in _splits(data):
        out, stream = _filtered(chunks)
        assert out == data, chunks
        assert (stream.pid, stream.prompts) == (None, 0)


def test_ordinary_output_is_not_held_back() -> None:
    stream = _StreamFilter()
    assert stream.feed(b"a\x1eb and more\n") == b"a\x1eb and more\n"
    assert stream.feed(b"plain\n") == b"plain\n"
    assert stream.flush() == b""
