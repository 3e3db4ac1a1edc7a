"""Sans-I/O text segmentation for streamed TTS: text pieces in, speakable segments out.

Streaming TTS synthesizes one segment at a time so the first audio leaves
after the first sentence, not after the whole text. The websocket
stream-input endpoint receives text in arbitrary pieces (an LLM's tokens), so
the segmenter buffers until a segment is complete.

Rules (decisions):

* A segment ends after sentence punctuation (``. ! ? …`` and the CJK ``。！？``,
  with any closing quotes or brackets) *followed by whitespace*, or at a
  newline. "3.5" and "e.g.x" never split; common abbreviations ("Mr.",
  "Dr.", "e.g.") and single initials ("J. Smith") do not end a sentence.
* A segment that grows past ``max_chars`` without a sentence end is cut at
  the last clause mark (``, ; :`` or a dash) or else the last space, so a
  run-on text still streams; a text with no space at all is cut hard.
* Segments partition the input exactly: every character, whitespace
  included, belongs to exactly one segment, so billing the segments bills
  exactly the text (``sum(len(s)) == len(text)``).
* :meth:`flush` returns whatever is buffered as a final segment, even
  mid-sentence; a segment holding only whitespace is still returned (it is
  billed, as the non-streaming endpoint bills whitespace) but callers need
  not synthesize it.
"""

from __future__ import annotations

import re

DEFAULT_MAX_CHARS = 300

_ABBREVIATIONS = frozenset("mr mrs ms dr prof sr jr st vs etc e.g i.e no fig approx dept est inc ltd co mt ft".split())
# Sentence punctuation, then closing quotes/brackets, then the whitespace that confirms it.
_END = re.compile(r"(?:[.!?…]+|[。！？]+)[\"'”’)\]]*(?=\s)|[。！？]+|\n")
_CLAUSE = re.compile(r"[,;:\u2014\u2013]\s|\s-\s")


class SentenceSegmenter:
    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        if max_chars < 16:
            raise ValueError("max_chars must be at least 16")
        self.max_chars = max_chars
        self._buf = ""

    @property
    def pending(self) -> str:
        return self._buf

    def feed(self, text: str) -> list[str]:
        """Add text; return the segments it completed (possibly none)."""
        self._buf += text
        out: list[str] = []
        while True:
            cut = self._next_cut()
            if cut is None:
                return out
            out.append(self._buf[:cut])
            self._buf = self._buf[cut:]

    def flush(self) -> list[str]:
        """Everything buffered, as segments (empty when nothing is buffered)."""
        out = self.feed("")
        if self._buf:
            out.append(self._buf)
            self._buf = ""
        return out

    def _next_cut(self) -> int | None:
        buf = self._buf
        for m in _END.finditer(buf):
            end = m.end()
            if m.group() != "\n" and not _ends_sentence(buf, m.start()):
                continue
            # The segment takes its trailing whitespace along, if it has arrived.
            while end < len(buf) and buf[end].isspace():
                end += 1
            if end > self.max_chars:
                break
            return end
        if len(buf) > self.max_chars:
            return _soft_cut(buf, self.max_chars)
        return None


def _ends_sentence(buf: str, punct_at: int) -> bool:
    """False for "Dr." / "e.g." / "J." style periods."""
    if buf[punct_at] != ".":
        return True
    word = re.search(r"([\w.]+)$", buf[:punct_at])
    if word is None:
        return True
    token = word.group(1).lower().rstrip(".")
    if token in _ABBREVIATIONS:
        return False
    return not (len(token) == 1 and token.isalpha() and word.group(1).isupper())


def _soft_cut(buf: str, limit: int) -> int:
    head = buf[:limit]
    clauses = list(_CLAUSE.finditer(head))
    if clauses and clauses[-1].end() > limit // 3:
        return clauses[-1].end()
    space = head.rfind(" ")
    if space > limit // 3:
        return space + 1
    return limit
