"""`resume.ReplyAttempt`: an S2S reply's audio goes on only up to the last complete word, and a
restarted reply continues after the heard words or has its repeated words skipped."""

from __future__ import annotations

from voicerouter.providers.base import AudioChunk
from voicerouter.resilience.resume import MAX_HOLD_S, ReplyProgress
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
