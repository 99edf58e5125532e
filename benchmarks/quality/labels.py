"""Text-only loop labels for the repetition benchmark, independent of CoreVital's signals.

A generation *loops* when some window of ``WINDOW`` consecutive words has a
seq-rep-4 (Welleck et al., 2020: 1 - unique 4-grams / 4-grams) of at least
``THRESHOLD``. The loop's *onset* is the first word, inside the first such
window, from which ``ONSET_WORDS`` consecutive words repeat words already said
earlier in the text (falling back to the first repeated 4-gram): the moment
the text begins to say again, verbatim, what it already said. Words are
whitespace-separated and compared case-insensitively without surrounding
punctuation.
"""

from __future__ import annotations

from dataclasses import dataclass

WINDOW = 64
THRESHOLD = 0.5
N = 4
ONSET_WORDS = 7
_PUNCTUATION = ".,;:!?\"'()[]{}*`"


@dataclass(frozen=True)
class LoopLabel:
    loops: bool
    seq_rep: float  # highest seq-rep-4 over the windows
    onset_word: int | None  # index into words(text)


def words(text: str) -> list[str]:
    return text.split()


def _norm(word: str) -> str:
    return word.strip(_PUNCTUATION).lower()


def seq_rep(tokens: list[str], n: int = N) -> float:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def label(text: str, window: int = WINDOW, threshold: float = THRESHOLD) -> LoopLabel:
    """The loop label of one generated text (see the module docstring)."""
    normal = [_norm(w) for w in words(text)]
    best, first = 0.0, None
    for start in range(max(1, len(normal) - window + 1)):
        rep = seq_rep(normal[start : start + window])
        best = max(best, rep)
        if first is None and rep >= threshold:
            first = start
    if first is None:
        return LoopLabel(False, best, None)
    return LoopLabel(True, best, _onset(normal, first, first + window))


def _onset(normal: list[str], start: int, stop: int) -> int | None:
    repeated = []  # repeated[i]: the 4-gram starting at word i was said before
    seen: set[tuple[str, ...]] = set()
    for i in range(len(normal) - N + 1):
        gram = tuple(normal[i : i + N])
        repeated.append(gram in seen)
        seen.add(gram)
    run = ONSET_WORDS - N + 1  # consecutive repeated 4-grams = ONSET_WORDS repeated words
    for i in range(start, min(stop, len(repeated))):
        if all(repeated[i : i + run]) and len(repeated[i : i + run]) == run:
            return i
    for i in range(start, min(stop, len(repeated))):
        if repeated[i]:
            return i
    return None


def word_starts(text: str) -> list[int]:
    """Character offset of each whitespace-separated word of ``text``."""
    out, inside = [], False
    for i, ch in enumerate(text):
        if ch.isspace():
            inside = False
        elif not inside:
            out.append(i)
            inside = True
    return out
