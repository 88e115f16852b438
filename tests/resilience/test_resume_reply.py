"""`resume.ReplyAttempt`: an S2S reply's audio goes on only up to the last complete word, and a
restarted reply continues after the heard words or has its repeated words skipped."""

from __future__ import annotations

import pytest

from voicerouter.providers.base import AudioChunk
from voicerouter.resilience.resume import DEFAULT_SECONDS_PER_CHAR, MAX_HOLD_S, UNSURE_HOLD_S, ReplyProgress
from voicerouter.testing.server import TONE_S_PER_CHAR, read_word_tones, tone, word_tones

RATE = 24000
TEXT = "You said: what is the weather today"


def chunks(pcm: bytes, ms: int = 50) -> list[AudioChunk]:
    step = RATE * ms // 1000 * 2
    return [AudioChunk(pcm[i : i + step], RATE) for i in range(0, len(pcm), step)]


def play(attempt, text_deltas: list[str], audio: bytes, *, until_s: float | None = None) -> tuple[str, bytes]:
    """Feed the deltas ahead of the audio (as Realtime sends them), up to `until_s` of audio or to the end."""
    said, out = "", b""
    for delta in text_deltas:
        text, passed = attempt.feed_text(delta)
        said += text
        out += b"".join(c.pcm for c in passed)
    received = 0.0
    for chunk in chunks(audio):
        if until_s is not None and received >= until_s:
            return said, out
        text, passed = attempt.feed_audio(chunk)
        received += chunk.duration_s
        said += text
        out += b"".join(c.pcm for c in passed)
    text, passed = attempt.finish()
    return said + text, out + b"".join(c.pcm for c in passed)


def words_in(pcm: bytes) -> list[tuple[str, float]]:
    return read_word_tones(pcm, RATE, TEXT.split())


def test_audio_goes_on_up_to_the_last_complete_word_and_a_continuation_follows_it():
    progress = ReplyProgress()
    first = progress.begin("a", TONE_S_PER_CHAR)
    said, out = play(first, [w + " " for w in TEXT.split()], word_tones(TEXT, RATE), until_s=1.0)
    assert progress.broke() == 3 and progress.heard == "You said: what" == said
    assert [w for w, _ in words_in(out)] == ["You", "said:", "what"]
    assert all(abs(s - TONE_S_PER_CHAR * len(w)) < 0.01 for w, s in words_in(out))  # no word cut
    second = progress.begin("b", TONE_S_PER_CHAR)  # told what was heard, it goes on from there
    rest = "is the weather today"
    said2, out2 = play(second, [rest], word_tones(rest, RATE))
    assert said2 == " is the weather today" and progress.heard + said2 == TEXT
    assert [w for w, _ in words_in(out + out2)] == TEXT.split()


def test_a_replacement_that_starts_over_has_the_heard_words_skipped():
    progress = ReplyProgress()
    play(progress.begin("a", TONE_S_PER_CHAR), [TEXT], word_tones(TEXT, RATE), until_s=1.0)
    progress.broke()
    heard = word_tones("You said: what", RATE)
    said, out = play(progress.begin("b", TONE_S_PER_CHAR), [TEXT], word_tones(TEXT, RATE))
    assert said == " is the weather today"
    assert [w for w, _ in words_in(heard + out)] == TEXT.split()


def test_audio_without_a_transcript_goes_on_at_a_pause_after_the_hold_limit():
    attempt = ReplyProgress().begin("a", TONE_S_PER_CHAR)
    passed = b""
    for chunk in chunks(word_tones(TEXT, RATE)):
        passed += b"".join(c.pcm for c in attempt.feed_audio(chunk)[1])
    assert passed  # no text ever came, yet the caller is not kept waiting
    heard = words_in(passed)
    assert all(abs(s - TONE_S_PER_CHAR * len(w)) < 0.01 for w, s in heard)  # cut at pauses only
    # one unbroken sound is passed on at twice the hold limit at the latest
    attempt = ReplyProgress().begin("a", TONE_S_PER_CHAR)
    out = [attempt.feed_audio(c)[1] for c in chunks(tone(3.0, RATE))]
    first = next(i for i, o in enumerate(out) if o)
    assert 2 * MAX_HOLD_S <= (first + 1) * 0.05 <= 2 * MAX_HOLD_S + 0.1


def test_before_the_voice_rate_is_learned_an_unconfirmed_word_end_holds_the_audio():
    """One unbroken sound (no pause to confirm a word end), at a rate the default misjudges by 1/6:
    cut after 1 s, nothing was passed on, so the next attempt starts over and nothing is heard twice."""
    pcm = tone(TONE_S_PER_CHAR * len(TEXT), RATE)
    progress = ReplyProgress()
    said, out = play(progress.begin("a", DEFAULT_SECONDS_PER_CHAR, rate_known=False),
                     [w + " " for w in TEXT.split()], pcm, until_s=1.0)
    assert (said, out) == ("", b"") and progress.broke() == 0
    # the same sound unbroken: all of it goes on, at the latest once UNSURE_HOLD_S waits behind
    attempt = ReplyProgress().begin("a", DEFAULT_SECONDS_PER_CHAR, rate_known=False)
    for delta in [w + " " for w in TEXT.split()]:
        attempt.feed_text(delta)
    outs = [attempt.feed_audio(c)[1] for c in chunks(pcm)]
    first = next(i for i, o in enumerate(outs) if o)
    assert (first + 1) * 0.05 == pytest.approx(UNSURE_HOLD_S + 0.05, abs=0.051)
    rest = attempt.finish()[1]
    assert attempt.said.strip() == TEXT and sum(len(c.pcm) for o in [*outs, rest] for c in o) == len(pcm)


def test_before_the_voice_rate_is_learned_pauses_place_the_word_ends():
    """Word gaps confirm word ends even at a misjudged rate: each estimate counts from the last gap
    found, so the error does not add up over the reply, and no word is cut or heard twice."""
    progress = ReplyProgress()
    first = progress.begin("a", DEFAULT_SECONDS_PER_CHAR, rate_known=False)
    said, out = play(first, [w + " " for w in TEXT.split()], word_tones(TEXT, RATE), until_s=1.6)
    assert progress.broke() >= 3 and said == progress.heard and TEXT.startswith(said)
    assert [w for w, _ in words_in(out)] == said.split()
    assert all(abs(s - TONE_S_PER_CHAR * len(w)) < 0.01 for w, s in words_in(out))  # no word cut
    rest = TEXT[len(said):].strip()
    said2, out2 = play(progress.begin("a", DEFAULT_SECONDS_PER_CHAR, rate_known=False), [rest], word_tones(rest, RATE))
    assert [w for w, _ in words_in(out + out2)] == TEXT.split()


def test_a_replacement_that_starts_over_at_an_unlearned_rate_is_cut_at_its_own_rate():
    """A start-over whose rate is unknown and whose sound has no pause: the repeated words' audio
    is placed at the attempt's own rate once all of it has come, so exactly the rest is heard."""
    progress = ReplyProgress()
    play(progress.begin("a", TONE_S_PER_CHAR), [TEXT], word_tones(TEXT, RATE), until_s=1.0)
    progress.broke()
    assert progress.heard == "You said: what"
    pcm = tone(TONE_S_PER_CHAR * len(TEXT), RATE)
    said, out = play(progress.begin("b", DEFAULT_SECONDS_PER_CHAR, rate_known=False), [TEXT], pcm)
    assert said == " is the weather today"
    assert len(out) / 2 / RATE == pytest.approx(TONE_S_PER_CHAR * (len(TEXT) - len("You said: what")), abs=0.002)
