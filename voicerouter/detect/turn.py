"""Heuristic end-of-turn detection: decides when the user has finished speaking, from VAD speech
regions and (when streaming STT gives one) the latest partial transcript.

Driven frame by frame with `update(t, speaking, started, ended)` (or `feed(vad_update)`);
`on_partial(text)` feeds the newest partial transcript. All durations come from `TurnConfig`.

Rules:
- A turn starts when speech starts (or is already under way) while no turn is open. Its
  `start_s` is the VAD's speech start.
- Pauses do not end a turn by themselves: when speech resumes before the deadline below, the
  same turn continues, however many pauses it holds.
- After speech ends, the turn ends once the silence since the end of speech reaches a wait
  chosen from the latest partial transcript of this turn (reason in brackets):
  - no partial, or none of the cues below: `silence_ms` ("silence");
  - it ends on a digit sequence: `digits_silence_ms` ("digits_wait"). A digit sequence is a
    trailing numeral ("42", "555-1234") or two trailing number words or numerals ("five five",
    "two oh"; "oh"/"o" count as zero only inside such a sequence);
  - it ends on a filler, conjunction, article or preposition ("and", "um", "uh", "so", "but",
    "or", "the", "a", "to", "of", "because", ...; `fillers` replaces this list), or on a
    trailing comma, dash or ellipsis: `incomplete_silence_ms` ("incomplete_wait");
  - it ends like a finished sentence: `complete_silence_ms` ("complete_sentence"). That is
    terminal punctuation (". ! ?"), or, for engines without punctuation (pocketsphinx), at least
    3 words whose last is not a filler or another word that rarely ends a sentence
    ("I", "we", "is", "can", "want", ...).
  The cues are checked in this order: trailing comma/dash/ellipsis, "?" or "!", digits,
  fillers, ".", the 3-word rule. Silence counts from the VAD's `speech_end_s` (the end of the
  last voiced frame), so the VAD's own `stop_ms` is part of the wait, not added to it. The wait
  is re-evaluated every frame, so a partial that arrives during the pause counts at once;
  partials from before the turn started are ignored.
- No wait is ever shorter than `min_pause_ms`: a shorter pause never ends a turn.
- Speech that spans less than `min_turn_ms` (turn start to end of speech) is not a turn: the
  detector still returns a decision, with reason "too_short" and `discarded` true, so the caller
  can drop the audio it buffered; the turn count does not advance.
- A turn that has lasted `max_turn_ms` ends at once ("max_duration"), even mid-speech; if speech
  goes on, a new turn starts at that moment, and it is never discarded as too short.
- `finish(t)` ends an open turn when the input ends ("end_of_input", or "too_short").
Every decision carries `start_s`, `end_s` (when it was decided), `speech_end_s` (end of the last
speech, or `end_s` if still speaking) and `delay_ms` = end_s - speech_end_s, all in audio seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from voicerouter.config.schema import TurnConfig
from voicerouter.detect.vad import VadUpdate

DEFAULT_FILLERS = frozenset(
    # hesitations
    "um umm uh uhh uhm er erm ah hmm mm like "
    # conjunctions
    "and but or nor so because cause cuz if then than while although though unless until whether plus "
    # articles and determiners that need a noun
    "the a an some any my your our their its every each "
    # prepositions
    "to of in on at for with from by about into onto over under between through after before as via per".split()
)
# Words that rarely end a sentence but are no reason to wait longer than usual either.
NON_FINAL = frozenset(
    "i i'm i'd i'll i've we they he she is are was were am be been being will would could should can "
    "can't cannot do does did don't have has had want need let let's very".split()
)
NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand "
    "double triple".split()
)
ZERO_WORDS = frozenset({"oh", "o"})

_WORD = re.compile(r"[a-z0-9']+")
_INCOMPLETE_TAIL = re.compile(r"(,|-|–|—|\.\.\.|…)$")
_CLOSERS = "\"')]}»”’ "


@dataclass(frozen=True)
class TurnDecision:
    reason: str  # silence | complete_sentence | incomplete_wait | digits_wait | max_duration | end_of_input | too_short
    start_s: float
    end_s: float
    speech_end_s: float
    delay_ms: float
    text: str = ""  # the partial transcript the decision was based on

    @property
    def discarded(self) -> bool:
        """True when the speech was too short to be a turn."""
        return self.reason == "too_short"


class TurnDetector:
    def __init__(self, config: TurnConfig | None = None) -> None:
        self.config = config or TurnConfig()
        self.fillers = (
            frozenset(w.lower() for w in self.config.fillers) if self.config.fillers is not None else DEFAULT_FILLERS
        )
        self._never_final = self.fillers | DEFAULT_FILLERS | NON_FINAL
        self.turns = 0  # turns ended (discarded ones not counted)
        self.reset()

    def reset(self) -> None:
        self._in_turn = False
        self._continued = False
        self._start_s = 0.0
        self._speech_end_s: float | None = None  # set while paused
        self._partial = ""

    @property
    def in_turn(self) -> bool:
        return self._in_turn

    @property
    def turn_start_s(self) -> float | None:
        return self._start_s if self._in_turn else None

    @property
    def partial(self) -> str:
        return self._partial

    def on_partial(self, text: str) -> None:
        """The latest partial transcript of the current turn (replaces the previous one)."""
        if self._in_turn:
            self._partial = text

    def endpoint(self, text: str | None = None) -> tuple[str, int]:
        """The reason and silence (ms) that would end the turn now, given `text` (default: the partial)."""
        reason, ms = self._classify(self._partial if text is None else text)
        return reason, max(ms, self.config.min_pause_ms)

    def _classify(self, text: str) -> tuple[str, int]:
        c = self.config
        stripped = text.strip().rstrip(_CLOSERS).lower()
        words = _WORD.findall(stripped)
        if not words:
            return "silence", c.silence_ms
        if _INCOMPLETE_TAIL.search(stripped):
            return "incomplete_wait", c.incomplete_silence_ms
        if stripped.endswith(("?", "!")):
            return "complete_sentence", c.complete_silence_ms
        if self._ends_on_digits(words):
            return "digits_wait", c.digits_silence_ms
        if words[-1] in self.fillers:
            return "incomplete_wait", c.incomplete_silence_ms
        if stripped.endswith("."):
            return "complete_sentence", c.complete_silence_ms
        if len(words) >= 3 and words[-1] not in self._never_final:
            return "complete_sentence", c.complete_silence_ms
        return "silence", c.silence_ms

    @staticmethod
    def _ends_on_digits(words: list[str]) -> bool:
        def is_digit(w: str) -> bool:
            return w.isdigit() or w in NUMBER_WORDS

        last = words[-1]
        if last.isdigit():
            return True
        if len(words) < 2:
            return False
        prev = words[-2]
        return (
            (is_digit(last) or last in ZERO_WORDS)
            and (is_digit(prev) or prev in ZERO_WORDS)
            and not (last in ZERO_WORDS and prev in ZERO_WORDS)
        )

    def feed(self, update: VadUpdate) -> TurnDecision | None:
        """`update()` from a VAD update, using its exact speech start and end times."""
        return self.update(
            update.t,
            update.speaking,
            update.started,
            update.ended,
            speech_start_s=update.speech_start_s,
            speech_end_s=update.speech_end_s,
        )

    def update(
        self,
        t: float,
        speaking: bool,
        started: bool,
        ended: bool,
        *,
        speech_start_s: float | None = None,
        speech_end_s: float | None = None,
    ) -> TurnDecision | None:
        """Advance to audio time `t`; returns a decision when the turn ends with this frame."""
        if (started or speaking) and not self._in_turn:
            self._begin(speech_start_s if started and speech_start_s is not None else t)
        if not self._in_turn:
            return None
        if speaking:
            self._speech_end_s = None  # a pause, if any, is over: the same turn goes on
        elif self._speech_end_s is None:
            # Speech ended (with `ended`, or the caller only reports `speaking`).
            self._speech_end_s = speech_end_s if ended and speech_end_s is not None else t

        if (t - self._start_s) * 1000 >= self.config.max_turn_ms:
            decision = self._end("max_duration", t, t if self._speech_end_s is None else self._speech_end_s)
            if speaking:
                self._begin(t, continued=True)
            return decision

        if self._speech_end_s is not None:
            reason, wait_ms = self.endpoint()
            if (t - self._speech_end_s) * 1000 >= wait_ms - 1e-6:
                return self._end(reason, t, self._speech_end_s)
        return None

    def finish(self, t: float, speaking: bool = False) -> TurnDecision | None:
        """The input ended at `t`: end the open turn, if any."""
        if not self._in_turn:
            return None
        speech_end = t if speaking or self._speech_end_s is None else self._speech_end_s
        return self._end("end_of_input", t, speech_end)

    def _begin(self, start_s: float, continued: bool = False) -> None:
        self._in_turn = True
        self._continued = continued
        self._start_s = start_s
        self._speech_end_s = None
        self._partial = ""

    def _end(self, reason: str, t: float, speech_end_s: float) -> TurnDecision:
        too_short = (speech_end_s - self._start_s) * 1000 < self.config.min_turn_ms
        # The rest of a turn split by max_duration is real speech, however short: never drop it.
        if too_short and reason != "max_duration" and not self._continued:
            reason = "too_short"
        else:
            self.turns += 1
        decision = TurnDecision(
            reason=reason,
            start_s=self._start_s,
            end_s=t,
            speech_end_s=speech_end_s,
            delay_ms=max(0.0, (t - speech_end_s) * 1000),
            text=self._partial,
        )
        self.reset()
        return decision
