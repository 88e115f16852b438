"""A replacement reply after a cut: what it repeats of the heard part is dropped at a word boundary."""

from __future__ import annotations

import pytest

from voicerouter.resilience.continuation import Continuation, continue_after

HEARD = "Sure thing. I booked a table."


@pytest.mark.parametrize(
    ("reply", "rest"),
    [
        ("For two at eight.", " For two at eight."),  # a true continuation
        (" for two at eight.", " for two at eight."),
        ("Sure thing. I booked a table. For two at eight.", " For two at eight."),  # started over
        ("sure thing, I booked a table! For two.", " For two."),  # case and punctuation do not matter
        ("I booked a table. For two at eight.", " For two at eight."),  # restated the last sentence
        ("Sure thing. I booked a room instead.", " I booked a room instead."),  # repeated sentences only
        ("Sure thing.", ""),  # nothing new
        ("Table for two.", " Table for two."),  # a word in common is no repeat
    ],
)
def test_a_repeated_beginning_is_dropped_in_whole_heard_sentences(reply: str, rest: str):
    assert continue_after(HEARD, reply) == rest


def test_without_heard_text_the_reply_is_passed_as_is():
    assert continue_after("", "Hello there.") == "Hello there."


def test_streamed_pieces_are_held_back_only_while_they_may_be_a_repeat():
    follow = Continuation(HEARD)
    out = [follow.feed(p) for p in ["Sure", " thing.", " I", " booked", " a", " table.", " For", " two."]]
    assert out[:6] == [""] * 6 and "".join(out) + follow.finish() == " For two."
    assert follow.dropped_words == 6

    follow = Continuation(HEARD)
    out = [follow.feed(p) for p in ["And", " for", " two."]]
    assert out[0] == "" and out[1] == " And for" and follow.finish() == ""  # decided after its first word
