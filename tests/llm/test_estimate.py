"""The documented token estimate."""

from __future__ import annotations

import json

from speech.llm.estimate import (
    MESSAGE_TOKENS,
    NON_TEXT_PART_TOKENS,
    REPLY_TOKENS,
    answer_output_tokens,
    input_tokens,
    output_texts,
    text_tokens,
)


def test_text_is_a_quarter_of_its_utf8_bytes_rounded_up() -> None:
    assert [text_tokens(t) for t in ("", "a", "abcd", "abcde", "é", "機器人")] == [0, 1, 1, 2, 1, 3]


def test_input_counts_messages_parts_and_schemas() -> None:
    tools = [{"type": "function", "function": {"name": "turn"}}]
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 100_000}},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "turn"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"},
        ],
        "tools": tools,
    }
    expected = (
        REPLY_TOKENS
        + 4 * MESSAGE_TOKENS
        + text_tokens("system")
        + text_tokens("Be brief.")
        + text_tokens("user")
        + text_tokens("What is this?")
        + NON_TEXT_PART_TOKENS  # the image costs the same whatever its base64 size
        + text_tokens("assistant")
        + text_tokens(json.dumps([{"id": "c1", "function": {"name": "turn"}}]))
        + text_tokens("tool")
        + text_tokens("c1")
        + text_tokens("done")
        + text_tokens(json.dumps(tools))
    )
    assert input_tokens(body) == expected


def test_odd_bodies_count_what_they_can() -> None:
    assert input_tokens({}) == REPLY_TOKENS
    assert input_tokens({"messages": "nope"}) == REPLY_TOKENS
    assert input_tokens({"messages": [42, {"content": 7}]}) == REPLY_TOKENS + 2 * MESSAGE_TOKENS


def test_output_is_every_kind_of_produced_text() -> None:
    message = {
        "content": "Hi",
        "refusal": "No",
        "reasoning_content": "Because",
        "tool_calls": [{"function": {"name": "go", "arguments": "{}"}}, "junk"],
    }
    assert output_texts(message) == ["Hi", "No", "Because", "go", "{}"]
    assert output_texts(None) == []
    answer = {"choices": [{"message": {"content": "abcdefgh"}}, {"message": {"content": "x"}}, 5]}
    assert answer_output_tokens(answer) == 3
    assert answer_output_tokens({"choices": None}) == 0
