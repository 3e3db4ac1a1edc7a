"""The SSE parser and chunk inspection, fed bytes directly (no sockets)."""

from __future__ import annotations

import json

import pytest

from speech.errors import UpstreamProtocolError
from speech.llm.sse import DONE, ChunkInfo, SseParser, Usage, inspect


def feed_all(parser: SseParser, pieces: list[bytes]) -> list[tuple[bytes, str | None]]:
    out = []
    for piece in pieces:
        out += [(e.raw, e.data) for e in parser.feed(piece)]
    return out + [(e.raw, e.data) for e in parser.close()]


STREAM = b'data: {"a": 1}\n\n: keep-alive\n\ndata: line one\ndata: line two\n\nevent: x\ndata: [DONE]\n\n'
EXPECTED = [
    (b'data: {"a": 1}\n\n', '{"a": 1}'),
    (b": keep-alive\n\n", None),
    (b"data: line one\ndata: line two\n\n", "line one\nline two"),
    (b"event: x\ndata: [DONE]\n\n", DONE),
]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_events_come_out_whole_however_the_bytes_are_cut(newline: bytes, size: int) -> None:
    data = STREAM.replace(b"\n", newline)
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    assert feed_all(SseParser(10_000), pieces) == EXPECTED


def test_an_event_is_returned_as_soon_as_its_blank_line_arrives() -> None:
    parser = SseParser(1000)
    assert parser.feed(b"data: first\n") == []
    (event,) = parser.feed(b"\ndata: sec")
    assert event.data == "first"
    assert parser.feed(b"ond\n") == []
    assert [e.data for e in parser.feed(b"\n")] == ["second"]


def test_a_cr_split_from_its_lf_is_not_a_blank_line() -> None:
    parser = SseParser(1000)
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r") == []
    assert [e.data for e in parser.feed(b"\n\r\n")] == ["a\nb"]


def test_field_values_lose_one_leading_space_only() -> None:
    events = feed_all(SseParser(1000), [b"data:x\n\ndata:  two spaces\n\ndata\n\n"])
    assert [d for _, d in events] == ["x", " two spaces", ""]


def test_the_end_of_the_body_completes_a_last_event_without_its_blank_line() -> None:
    assert feed_all(SseParser(1000), [b"data: [DONE]"]) == [(b"data: [DONE]\n\n", DONE)]
    assert feed_all(SseParser(1000), [b"data: [DONE]\r"]) == [(b"data: [DONE]\n\n", DONE)]
    assert feed_all(SseParser(1000), [b"\n\n\n"]) == []


def test_an_event_over_the_limit_is_a_protocol_error() -> None:
    parser = SseParser(100)
    parser.feed(b"data: " + b"x" * 50 + b"\n")
    with pytest.raises(UpstreamProtocolError, match="over 100 bytes"):
        parser.feed(b"data: " + b"y" * 60 + b"\n")
    mid_line = SseParser(100)
    mid_line.feed(b"data: " + b"x" * 90)
    with pytest.raises(UpstreamProtocolError):
        mid_line.feed(b"z" * 20)  # a line that never ends is caught too


def test_a_long_line_in_many_pieces_is_not_rescanned() -> None:
    parser = SseParser(10_000_000)
    for _ in range(2000):
        assert parser.feed(b"x" * 1000) == []
    (event,) = parser.feed(b"\n\n")
    assert len(event.raw) == 2_000_002


def chunk(**fields: object) -> str:
    return json.dumps(fields)


def test_inspect_reads_text_usage_and_markers() -> None:
    assert inspect(None) == ChunkInfo()
    assert inspect(" [DONE] ") == ChunkInfo(done=True)
    content = inspect(chunk(choices=[{"index": 0, "delta": {"content": "Hello, world"}}], usage=None))
    assert content == ChunkInfo(output_tokens=3)
    tool = inspect(
        chunk(choices=[{"delta": {"tool_calls": [{"function": {"name": "turn", "arguments": '{"deg": 90}'}}]}}])
    )
    assert tool.output_tokens == 4  # "turn" + '{"deg": 90}' = 15 bytes
    usage_only = inspect(chunk(choices=[], usage={"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}))
    assert usage_only == ChunkInfo(usage=Usage(5, 7), usage_only=True)
    # Usage riding on a chunk with choices (some providers) is read but the chunk is not usage-only.
    last = inspect(chunk(choices=[{"delta": {}, "finish_reason": "stop"}], usage={"prompt_tokens": 1}))
    assert last.usage == Usage(1, None) and not last.usage_only
    assert inspect(chunk(error={"message": "overloaded"})).error


@pytest.mark.parametrize("data", ["not json", "[1, 2]", '"text"', "{", chunk(choices="nope"), chunk(choices=[1, None])])
def test_inspect_tolerates_what_it_does_not_understand(data: str) -> None:
    assert inspect(data) == ChunkInfo()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"prompt_tokens": 3, "completion_tokens": 4}, Usage(3, 4)),
        ({"prompt_tokens": -1, "completion_tokens": 4}, Usage(None, 4)),
        ({"prompt_tokens": True, "completion_tokens": 1.5}, None),
        ({"total_tokens": 9}, None),
        ("usage", None),
        (None, None),
    ],
)
def test_usage_counts_must_be_non_negative_integers(value: object, expected: Usage | None) -> None:
    assert Usage.parse(value) == expected
