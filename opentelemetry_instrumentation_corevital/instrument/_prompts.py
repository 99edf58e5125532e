"""Which prompts came from a chat template, and which tokenizer made them.

``generate`` only sees token ids. To name a span ``chat`` rather than
``text_completion`` before it starts (and, with content capture on, to record
the messages), two things tell a chat: the prompt opens with the token the
model's tokenizer's chat template opens a turn with (``<|im_start|>``,
``<|start_header_id|>``: found once per tokenizer by rendering its template),
whenever and however the ids were made; or the ids match ones
``apply_chat_template`` returned (or a tokenizer call on a text it rendered)
since ``instrument()``. Entries live in a small bounded LRU, so memory stays flat.
"""

from __future__ import annotations

import gc
import inspect
import sys
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
        self._by_source: dict[str, weakref.ref[Any]] = {}  # name_or_path -> the latest tokenizer loaded from it
        self._openers: weakref.WeakKeyDictionary[Any, ChatOpener | None] = weakref.WeakKeyDictionary()

    # -- writing -----------------------------------------------------------------
    def _put(self, table: OrderedDict, key: Any, record: PromptRecord) -> None:
        with self._lock:
            table[key] = record
            table.move_to_end(key)
            while len(table) > self._capacity:
                table.popitem(last=False)

    def remember_tokenizer(self, tokenizer: Any) -> None:
        """Keep a weak reference to the latest tokenizer (the fallback for decoding content), by where it came from."""
        ref = _weak(tokenizer)
        self._last_tokenizer = ref
        source = getattr(tokenizer, "name_or_path", None)
        if ref is not None and source:
            with self._lock:
                self._by_source[str(source)] = ref
                for key in [k for k, r in self._by_source.items() if r() is None]:
                    del self._by_source[key]

    def discover_tokenizers(self) -> None:
        """Remember the tokenizers alive now, so prompts they made before ``instrument()`` still read as chats."""
        base = getattr(sys.modules.get("transformers.tokenization_utils_base"), "PreTrainedTokenizerBase", None)
        if base is None:  # transformers not imported yet: no tokenizer exists
            return
        try:  # type(), not isinstance(): no object's __class__ property runs
            found = [obj for obj in gc.get_objects() if issubclass(type(obj), base)]
        except Exception:  # chats are then told by the tokenizer calls made from now on only
            return
        for tokenizer in found:
            self.remember_tokenizer(tokenizer)

    def tokenizer_for(self, model: Any, given: Any = None) -> Any:
        """The tokenizer of ``model``: ``given`` (generate's own), else one loaded from where the model was."""
        if given is not None:
            return given
        source = getattr(model, "name_or_path", None)
        ref = self._by_source.get(str(source)) if source else None
        return ref() if ref is not None else None

    def is_chat(self, row: Sequence[int], tokenizer: Any) -> bool:
        """Whether a prompt row (padding removed) is a chat: it opens with the template's turn token, or was one."""
        opener = self._opener(tokenizer) if tokenizer is not None else None
        if opener is not None and opener.opens(row):
            return True
        record = self.lookup_ids(row)
        return record is not None and record.chat

    def _opener(self, tokenizer: Any) -> ChatOpener | None:
        try:
            if tokenizer not in self._openers:
                self._openers[tokenizer] = ChatOpener.of(tokenizer)
            return self._openers[tokenizer]
        except TypeError:  # not weakly referenceable
            return ChatOpener.of(tokenizer)

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
            self._by_source.clear()
        self._last_tokenizer = None


@dataclass(frozen=True)
class ChatOpener:
    """The token a tokenizer's chat template opens a conversation with, and the ids it puts before any text."""

    token: int
    leading: frozenset[int]  # what the tokenizer adds before plain text too (BOS): skipped before the check

    def opens(self, row: Sequence[int]) -> bool:
        """Whether ``row`` starts (after leading BOS-like ids) with the template's opening token."""
        for token in row:
            if token not in self.leading:
                return token == self.token
        return False

    @classmethod
    def of(cls, tokenizer: Any) -> ChatOpener | None:
        """Render a one-message chat with the tokenizer's template; None when it has none or opens with plain text."""
        try:
            if not getattr(tokenizer, "chat_template", None):
                return None
            render = _unwrapped(tokenizer, "apply_chat_template")  # a probe: nothing is remembered
            text = render(tokenizer, [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
            ids = tokenizer.encode(text, add_special_tokens=False)
            leading = frozenset(tokenizer.encode("x", add_special_tokens=True)) - set(
                tokenizer.encode("x", add_special_tokens=False)
            )
            special = set(tokenizer.all_special_ids) | {
                int(i)
                for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
                if getattr(t, "special", False)
            }
        except Exception:  # a template that needs more than one user message, an odd tokenizer: no opener
            return None
        first = next((int(t) for t in ids if t not in leading), None)
        return cls(first, leading) if first is not None and first in special else None


def _unwrapped(obj: Any, name: str) -> Any:
    """The class's own function ``name``, under any wrapt wrapper of ours."""
    function = inspect.getattr_static(type(obj), name)
    return getattr(function, "__wrapped__", function)


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
