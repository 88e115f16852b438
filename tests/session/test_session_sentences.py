"""Reply text split into sentences for sentence-by-sentence TTS."""

from __future__ import annotations

from voicerouter.session.sentences import split_sentences


def test_sentences_keep_abbreviations_numbers_and_initials():
    text = "Hello there. How are you? Dr. Smith paid 3.5 dollars, e.g. for tea! J. Doe agreed.\nNew line"
    assert split_sentences(text) == [
        "Hello there.", "How are you?", "Dr. Smith paid 3.5 dollars, e.g. for tea!", "J. Doe agreed.", "New line",
    ]


def test_quotes_and_brackets_stay_with_their_sentence():
    assert split_sentences('He said "stop." Then (quietly) left.') == ['He said "stop."', "Then (quietly) left."]


def test_empty_and_unpunctuated_text():
    assert split_sentences("") == [] and split_sentences("  \n ") == []
    assert split_sentences("no punctuation at all") == ["no punctuation at all"]


def test_long_run_ons_are_cut_at_a_comma_then_a_space():
    text = ", ".join(f"item {i}" for i in range(60)) + "."
    pieces = split_sentences(text, max_chars=80)
    assert all(len(p) <= 80 for p in pieces) and len(pieces) > 1
    assert all(p.endswith(",") for p in pieces[:-1])
    assert " ".join(pieces) == text
    words = split_sentences("word " * 50, max_chars=40)
    assert all(len(p) <= 40 for p in words) and " ".join(words) == ("word " * 50).strip()
