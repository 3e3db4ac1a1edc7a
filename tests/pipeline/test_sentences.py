"""Tests for speech.pipeline.sentences: segments for streamed TTS."""

from __future__ import annotations

import random

import pytest

from speech.pipeline.sentences import SentenceSegmenter


def _all(text: str, max_chars: int = 300) -> list[str]:
    seg = SentenceSegmenter(max_chars)
    return seg.feed(text) + seg.flush()


def test_sentences_split_after_punctuation_and_keep_their_whitespace() -> None:
    assert _all("Hello there. How are you? Fine!  Bye") == ["Hello there. ", "How are you? ", "Fine!  ", "Bye"]


def test_a_sentence_is_released_as_soon_as_its_end_is_certain() -> None:
    seg = SentenceSegmenter()
    assert seg.feed("Hello there.") == []  # "there.5"? wait for the next character
    assert seg.feed(" How") == ["Hello there. "]
    assert seg.pending == "How"
    assert seg.feed(" are you?\n") == ["How are you?\n"]
    assert seg.flush() == []


def test_numbers_abbreviations_and_initials_do_not_end_a_sentence() -> None:
    text = "Dr. Smith paid 3.5 dollars, e.g. for J. R. R. Tolkien's book. Done."
    assert _all(text) == ["Dr. Smith paid 3.5 dollars, e.g. for J. R. R. Tolkien's book. ", "Done."]


def test_closing_quotes_and_brackets_stay_with_their_sentence() -> None:
    assert _all('He said "stop." Then (quietly.) left.') == ['He said "stop." ', "Then (quietly.) ", "left."]


def test_newlines_and_cjk_marks_end_segments() -> None:
    assert _all("line one\nline two") == ["line one\n", "line two"]
    assert _all("你好。再见！") == ["你好。", "再见！"]


def test_a_run_on_text_is_cut_at_a_clause_or_a_space_within_the_limit() -> None:
    text = "word " * 30 + "alpha, " + "word " * 30
    out = _all(text, max_chars=200)
    assert all(len(s) <= 200 for s in out)
    assert out[0].endswith("alpha, ")
    no_space = "x" * 100
    assert _all(no_space, max_chars=40) == ["x" * 40, "x" * 40, "x" * 20]


@pytest.mark.parametrize("seed", range(20))
def test_segments_partition_the_text_exactly_however_it_arrives(seed: int) -> None:
    rng = random.Random(seed)
    words = ["Hello", "world.", "Dr.", "3.14", "ok?", "yes!", "no", "a,", "b;", "\n", "end.", "…", "“quoted.”"]
    text = " ".join(rng.choice(words) for _ in range(200))
    seg = SentenceSegmenter(64)
    out: list[str] = []
    i = 0
    while i < len(text):
        n = rng.randint(1, 12)
        out += seg.feed(text[i : i + n])
        i += n
    out += seg.flush()
    assert "".join(out) == text
    assert all(0 < len(s) <= 64 for s in out)


def test_max_chars_has_a_floor() -> None:
    with pytest.raises(ValueError):
        SentenceSegmenter(5)
