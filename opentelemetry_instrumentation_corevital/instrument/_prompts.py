"""Which prompts came from a chat template, and which tokenizer made them.

``generate`` only sees token ids. To name a span ``chat`` rather than
``text_completion`` (and, with content capture on, to record the messages), we
remember the ids that ``apply_chat_template`` returned, and the ids of any
tokenizer call on a string that ``apply_chat_template`` rendered. A generation
whose prompt ids (padding removed) match a remembered entry is a chat.
Entries live in a small bounded LRU, so memory stays flat.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

CAPACITY = 256


@dataclass(frozen=True)
class PromptRecord:
    """How a tokenizer output came to be: chat or plain, and what made it (so a generation can be told as chat)."""

    chat: bool
    messages: Any = None  # the conversation passed to apply_chat_template, when a chat
    tokenizer_ref: weakref.ref[Any] | None = None  # the tokenizer that made the ids

    @property
    def tokenizer(self) -> Any:
        """The tokenizer that made the ids, while it is alive (for decoding content)."""
        return self.tokenizer_ref() if self.tokenizer_ref is not None else None


def _weak(obj: Any) -> weakref.ref[Any] | None:
    try:
        return weakref.ref(obj)
    except TypeError:
        return None


class PromptRegistry:
    """Recent tokenizer outputs and the prompts behind them, bounded and thread-safe."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._ids: OrderedDict[tuple[int, ...], PromptRecord] = OrderedDict()
        self._texts: OrderedDict[str, PromptRecord] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()
        self._last_tokenizer: weakref.ref[Any] | None = None

    # -- writing -----------------------------------------------------------------
    def _put(self, table: OrderedDict, key: Any, record: PromptRecord) -> None:
        with self._lock:
            table[key] = record
            table.move_to_end(key)
            while len(table) > self._capacity:
                table.popitem(last=False)

    def remember_tokenizer(self, tokenizer: Any) -> None:
        """Keep a weak reference to the latest tokenizer: the fallback for decoding content."""
        self._last_tokenizer = _weak(tokenizer)

    def remember_output(self, output: Any, records: PromptRecord | Sequence[PromptRecord]) -> None:
        """Remember whatever a tokenizer returned: text(s), id list(s), tensors or a BatchEncoding.

        ``records`` is one record for every row, or one record per row of a batch.
        """

        def record_for(i: int) -> PromptRecord:
            if isinstance(records, PromptRecord):
                return records
            return records[min(i, len(records) - 1)]

        if isinstance(output, str):
            self._put(self._texts, output, record_for(0))
            return
        if isinstance(output, (list, tuple)) and output and all(isinstance(t, str) for t in output):
            for i, text in enumerate(output):
                self._put(self._texts, text, record_for(i))
            return
        for i, row in enumerate(_id_rows(output)):
            self._put(self._ids, row, record_for(i))

    # -- reading -----------------------------------------------------------------
    def has_texts(self) -> bool:
        """Whether any chat-templated text waits to be tokenized (skips the lookup otherwise)."""
        return bool(self._texts)

    def lookup_text(self, text: Any) -> PromptRecord | None:
        """The record of a remembered text (or of a batch's first text), if any."""
        if isinstance(text, str):
            return self._texts.get(text)
        if isinstance(text, (list, tuple)) and text and isinstance(text[0], str):
            return self._texts.get(text[0])
        return None

    def lookup_ids(self, row: Sequence[int]) -> PromptRecord | None:
        """The record of a remembered row of token ids, if any."""
        return self._ids.get(tuple(row))

    @property
    def last_tokenizer(self) -> Any:
        """The latest tokenizer seen, while it is alive."""
        return self._last_tokenizer() if self._last_tokenizer is not None else None

    def clear(self) -> None:
        """Forget everything (tests and a fresh start)."""
        with self._lock:
            self._ids.clear()
            self._texts.clear()
        self._last_tokenizer = None


def _to_list(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and getattr(value, "device", None) is not None and value.device.type != "cpu":
        return None  # never read a device tensor here: that would synchronise
    return tolist() if callable(tolist) else value


def _id_rows(output: Any) -> Iterable[tuple[int, ...]]:
    """Token-id rows of a tokenizer result, with padding removed via its attention mask."""
    ids, mask = output, None
    getter = getattr(output, "get", None)
    if callable(getter) and not isinstance(output, (list, tuple)):
        ids, mask = getter("input_ids"), getter("attention_mask")
    ids = _to_list(ids)
    mask = _to_list(mask) if mask is not None else None
    if not ids:
        return []
    if isinstance(ids[0], int):  # a single unbatched row
        ids = [ids]
        mask = [mask] if mask and isinstance(mask[0], int) else None
    rows = []
    for i, row in enumerate(ids):
        if not isinstance(row, (list, tuple)) or not all(isinstance(t, int) for t in row):
            continue
        if mask is not None and i < len(mask):
            row = [t for t, m in zip(row, mask[i]) if m]
        rows.append(tuple(row))
    return rows
