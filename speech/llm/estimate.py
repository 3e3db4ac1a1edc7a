"""The gateway's token estimate, for when the upstream's count is not known.

It is used twice: to size a request's reservation before the call (the input
estimate plus ``max_tokens``), and to bill a request whose upstream never
reported ``usage`` (a stream the client left early, an upstream that does not
send it); such usage records carry ``estimated = true``.

The rule, deliberately simple and the same for every model:

* text costs ``ceil(UTF-8 bytes / 4)`` tokens. About four characters per
  token is the usual figure for English with the GPT tokenizers; counting
  bytes rather than characters keeps other scripts from being underestimated
  (a CJK character is three bytes and roughly one token);
* each message adds 4 tokens (role and separators) and every request 3 (the
  priming of the reply), as OpenAI documents for its chat models;
* each non-text content part (an image, audio, a file) counts as 765 tokens,
  what OpenAI charges for a 1024x1024 image at high detail;
* ``tools``, ``functions`` and ``response_format`` count as the text of their
  JSON;
* output is the text the upstream produced: content, refusals, reasoning and
  tool-call names and arguments, by the same text rule; in a stream each
  chunk's text is rounded up on its own (streams carry about one token per
  chunk, so this tracks the true count better than rounding the total).

No tokenizer is bundled: the true counts differ per model and provider, and
they come from the upstream whenever it reports them.
"""

from __future__ import annotations

import json
from typing import Any

BYTES_PER_TOKEN = 4
MESSAGE_TOKENS = 4
REPLY_TOKENS = 3
NON_TEXT_PART_TOKENS = 765
# Request fields whose JSON the model reads besides the messages.
SCHEMA_FIELDS = ("tools", "functions", "response_format")


def text_tokens(text: str) -> int:
    return -(-len(text.encode("utf-8", "surrogatepass")) // BYTES_PER_TOKEN)


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return text_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += text_tokens(part["text"])
            elif isinstance(part, str):
                total += text_tokens(part)
            else:
                total += NON_TEXT_PART_TOKENS
        return total
    return 0


def input_tokens(body: dict[str, Any]) -> int:
    """Estimated prompt tokens of a chat-completions request body."""
    total = REPLY_TOKENS
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        total += MESSAGE_TOKENS
        if not isinstance(message, dict):
            continue
        total += _content_tokens(message.get("content"))
        for name in ("role", "name", "tool_call_id"):
            if isinstance(message.get(name), str):
                total += text_tokens(message[name])
        if message.get("tool_calls"):
            total += text_tokens(json.dumps(message["tool_calls"], ensure_ascii=False))
    for name in SCHEMA_FIELDS:
        if body.get(name):
            total += text_tokens(json.dumps(body[name], ensure_ascii=False))
    return total


def output_texts(message: Any) -> list[str]:
    """The produced text of one choice's ``message`` (plain) or ``delta`` (stream)."""
    if not isinstance(message, dict):
        return []
    keys = ("content", "refusal", "reasoning_content", "reasoning")
    out = [message[k] for k in keys if isinstance(message.get(k), str)]
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            out += [function[k] for k in ("name", "arguments") if isinstance(function.get(k), str)]
    return out


def answer_output_tokens(answer: Any) -> int:
    """Estimated completion tokens of a plain (non-streamed) answer."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    total = 0
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict):
            total += sum(text_tokens(t) for t in output_texts(choice.get("message")))
    return total
