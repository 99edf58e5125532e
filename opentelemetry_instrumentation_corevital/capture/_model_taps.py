"""The taps of one call on a ``transformers`` model: found from its declared outputs, cheap inside the forward.

Forward hooks on the decoder layers keep a *reference* to each layer's
new-token output (and input): no kernels inside the forward. Attention is
seen through the wrapped attention functions (:class:`AttentionTap`) or, for
eager models, the attention modules' own weights; MoE routers through hooks
on the routers. Only the prefill pass computes here (prompt telemetry).
A hook records only for the call bound to its context (:data:`ACTIVE_TAPS`):
the model may be shared with other threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import _hidden, _intercept, _prompt
from ._attention_tap import AttentionTap
from ._intercept import ACTIVE_TAPS
from ._layers import discover, first_tensor
from ._plan import CapturePlan
from ._taps import OutputHook, Prefill, StepBuffers, Taps

EAGER_SOURCE = "eager attention weights"


class ModelTaps:
    """Installs, feeds and removes the hooks of one call; what they keep waits in :attr:`buffers`."""

    def __init__(
        self,
        model: Any,
        plan: CapturePlan,
        prompt_ids: torch.Tensor | None,
        prompt_mask: torch.Tensor | None,
        unavailable: dict[str, str],
        on_error: Callable[[Exception], None],
    ) -> None:
        self.model = model
        self.plan = plan
        self.unavailable = unavailable  # shared with the source: signal group -> reason
        self.prompt_ids = prompt_ids
        self.prompt_mask = prompt_mask
        self.is_seq2seq = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
        self.taps = Taps(on_error)  # a hook that raises stops the capture, never the forward
        self.active = False  # hooks in place
        self.recording = True  # layer data is kept for the step in progress
        self.teacher_forced = False  # one scoring forward: keep every position
        self.forwards = 0
        self.steps = 0  # decoding steps reduced so far
        self.rows_tokens: tuple[int, int] | None = None  # (rows, tokens) of the forward in progress
        self.layers: list[int] = []
        self.consecutive = True  # captured layers follow each other: a layer's input is the previous output
        self.routers = False
        self.top_k_experts = 2
        self.attention_source: str | None = None
        self.attention_listener: AttentionTap | None = None
        self.buffers = StepBuffers()
        self.prefill = Prefill()

    # -- installation -----------------------------------------------------------------------
    def install(self) -> None:
        """Put every hook the plan needs in place (none when the model's layout is not understood)."""
        plan = self.plan
        if not plan.needs_layers:
            return
        try:
            layout = discover(self.model)
        except Exception as exc:  # an unusual model: logits only
            self.unavailable["layers"] = f"model layout not understood: {exc}"
            return
        if layout.problems:
            self.unavailable["layers"] = "; ".join(layout.problems)
        count = len(layout.decoder_layers)
        if count == 0:
            return
        wanted = list(range(count)) if plan.layers is None else sorted({i for i in plan.layers if 0 <= i < count})
        if not wanted:
            self.unavailable["layers"] = (
                f"none of the requested layers {list(plan.layers or [])} exist (model has {count})"
            )
            return
        self.layers = wanted
        self.consecutive = wanted == list(range(wanted[0], wanted[0] + len(wanted)))
        n = len(wanted)
        self.buffers = StepBuffers(n)
        taps = self.taps
        taps.before("model", self.model, self._on_forward)
        for slot, index in enumerate(wanted):
            target = layout.decoder_layers[index]
            taps.after(f"layer {target.name}", target.module, self._layer_hook(slot, target.output_index))
        slots: dict[int, tuple[str, int, float | None]] = {}
        attn_impl = str(getattr(getattr(self.model, "config", None), "_attn_implementation", "") or "")
        if plan.attention:
            if not layout.decoder_attention:
                self.unavailable["attention"] = "attention modules not found for this architecture"
            elif attn_impl == "eager":
                self.attention_source = EAGER_SOURCE
                for slot, index in enumerate(wanted):
                    target = layout.decoder_attention[index]
                    taps.after(f"attention {target.name}", target.module, self._eager_hook(slot, target.output_index))
            elif not _intercept.installed():
                self.unavailable["attention"] = "attention interception is not installed"
            else:
                self.attention_source = f"query row recomputed beside {attn_impl or 'the model'} attention"
                for slot, index in enumerate(wanted):
                    for sub in layout.decoder_attention[index].module.modules():
                        slots[id(sub)] = ("decoder", slot, getattr(sub, "scaling", None))
        if plan.moe and layout.routers:
            self.routers = True
            self.top_k_experts = int(getattr(self.model.config, "num_experts_per_tok", 2) or 2)
            for slot, index in enumerate(wanted):
                target = layout.routers[index]
                taps.after(f"router {target.name}", target.module, self._router_hook(slot, target.output_index))
        if plan.prompt:
            self.prefill.layers = {"hidden_norm": [None] * n, "attention": [None] * n}
            if self.is_seq2seq:
                self.unavailable["prompt"] = "prompt surprisal does not apply to encoder-decoder models (see encoder)"
            elif layout.base_decoder is not None and layout.lm_head is not None and self.prompt_ids is not None:
                taps.after("decoder output", layout.base_decoder, self._base_decoder_hook(layout.lm_head))
            else:
                self.unavailable["prompt_surprisal"] = "needs input_ids and the model's output head"
        if plan.encoder and self.is_seq2seq and layout.encoder_layers:
            m = len(layout.encoder_layers)
            self.prefill.encoder_indices = list(range(m))
            self.prefill.encoder = {"hidden_norm": [None] * m, "attention": [None] * m}
            for slot, target in enumerate(layout.encoder_layers):
                taps.after(f"encoder layer {target.name}", target.module, self._encoder_hook(slot, target.output_index))
            if attn_impl != "eager" and layout.encoder_attention:
                for slot, target in enumerate(layout.encoder_attention):
                    for sub in target.module.modules():
                        slots.setdefault(id(sub), ("encoder", slot, getattr(sub, "scaling", None)))
        if slots:
            self.attention_listener = AttentionTap(self, slots)
        self.active = True

    def remove(self) -> None:
        """Remove every tap; layer data captured so far is kept, nothing more is recorded."""
        self.taps.remove()
        self.active = False
        self.recording = False

    def compiled_off(self, reason: str) -> None:
        """The forward runs compiled: take every tap out before it first runs, and say why no layer data comes."""
        self.remove()
        self.layers = []
        self.attention_listener = None
        self.attention_source = None
        self.prefill = Prefill()
        if self.plan.needs_layers:
            self.unavailable["layers"] = reason

    def release(self) -> None:
        """Free what the taps kept (after the transfer)."""
        self.buffers.clear()
        self.prefill = Prefill()

    def stop_attention(self, reason: str) -> None:
        """The attention capture failed: say why and stop listening (the rest goes on)."""
        self.unavailable["attention"] = reason
        self.attention_listener = None

    def next_step(self, step: int) -> None:
        """Step ``step`` comes next: keep its layer data when the stride says so."""
        self.steps = step
        self.recording = self.active and step % self.plan.step_stride == 0

    @property
    def eager_attention(self) -> bool:
        """Attention is read from the modules' own weights (eager models)."""
        return self.attention_source == EAGER_SOURCE

    @property
    def wants_attention(self) -> bool:
        """Whether steps reduce attention statistics (off once the attention capture failed)."""
        return self.plan.attention and (self.attention_listener is not None or self.eager_attention)

    def valid_mask(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """The prompt's attention mask, expanded like generate expands rows (beams, samples)."""
        return _expand_rows(self.prompt_mask, hidden.shape[0], hidden.shape[1], hidden.device)

    # -- hooks (all cheap: keep references, compute only at prefill) -------------------
    def mine(self) -> bool:
        """Whether the forward running now belongs to this call."""
        return ACTIVE_TAPS.get() is self

    def _on_forward(self, module: Any, args: Any, kwargs: dict) -> None:
        if self.mine():
            self.forwards += 1
            inputs = kwargs.get("decoder_input_ids") if self.is_seq2seq else kwargs.get("input_ids")
            if inputs is None:
                inputs = kwargs.get("decoder_inputs_embeds" if self.is_seq2seq else "inputs_embeds")
            if inputs is None and args and isinstance(args[0], torch.Tensor):
                inputs = args[0]
            self.rows_tokens = (int(inputs.shape[0]), int(inputs.shape[1])) if inputs is not None else None

    def _layer_hook(self, slot: int, out_index: int) -> OutputHook:
        full = self.plan.hidden == "full"
        buffers = self.buffers

        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            if not self.recording or not self.mine():
                return
            out = first_tensor(output, out_index)
            if out is None:
                return
            inp = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("hidden_states")
            if self.teacher_forced:  # one teacher-forced forward: keep every position, reduced afterwards
                buffers.out[slot] = out
                buffers.inp[slot] = inp
                return
            if out.shape[1] != 1:  # prefill (or no cache): keep only the last position, as a copy
                if self.prefill.layers and self.forwards == 1 and not self.steps:
                    self.prefill.layers["hidden_norm"][slot] = _hidden.masked_token_norm_mean(out, self.valid_mask(out))
                out = out[:, -1:].clone()
                inp = inp[:, -1:].clone() if full and isinstance(inp, torch.Tensor) else None
            buffers.out[slot] = out
            if full:  # a reference; a lane of a split model starts from its first layer's input
                buffers.inp[slot] = inp

        return hook

    def _eager_hook(self, slot: int, out_index: int) -> OutputHook:
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            if not self.recording or not self.mine():
                return
            weights = first_tensor(output, out_index)
            if weights is not None and weights.dim() == 4:
                self.buffers.probs[slot] = weights if self.teacher_forced else weights[:, :, -1, :].float()

        return hook

    def _router_hook(self, slot: int, out_index: int) -> OutputHook:
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            if not self.recording or not self.mine():
                return
            logits = first_tensor(output, out_index)
            shape = self.rows_tokens
            if logits is None or shape is None or logits.shape[0] != shape[0] * shape[1]:
                return
            logits = logits.view(shape[0], shape[1], logits.shape[-1])
            self.buffers.router[slot] = logits if self.teacher_forced else logits[:, -1]

        return hook

    def _base_decoder_hook(self, head: torch.nn.Module) -> OutputHook:
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            if not self.mine() or self.forwards != 1 or self.steps or self.prefill.surprisal is not None:
                return
            hidden = first_tensor(output, 0)
            if hidden is None or hidden.dim() != 3:
                return
            ids = _expand_rows(self.prompt_ids, hidden.shape[0], hidden.shape[1], hidden.device)
            if ids is None:
                return
            try:
                self.prefill.surprisal = _prompt.prompt_surprisal(hidden, ids, head)
            except Exception as exc:
                self.unavailable["prompt_surprisal"] = f"{type(exc).__name__}: {exc}"

        return hook

    def _encoder_hook(self, slot: int, out_index: int) -> OutputHook:
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            if not self.mine() or self.forwards:
                return
            out = first_tensor(output, out_index)
            if out is not None and out.dim() == 3:
                self.prefill.encoder["hidden_norm"][slot] = _hidden.masked_token_norm_mean(out, self.valid_mask(out))

        return hook


def _expand_rows(value: torch.Tensor | None, rows: int, length: int, device: torch.device) -> torch.Tensor | None:
    """A [batch, length] prompt tensor repeated per row the way generate expands beams and samples."""
    if value is None or value.dim() != 2 or value.shape[1] != length or rows % value.shape[0]:
        return None
    if value.shape[0] != rows:
        value = value.repeat_interleave(rows // value.shape[0], dim=0)
    return value.to(device)
