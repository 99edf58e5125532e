"""What one generation captures, decided once before it starts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CapturePlan:
    """Which signals one call captures; every source reads it, none changes it."""

    signals: bool = True  # logit signals
    hidden: str = "off"  # "off", "norm" (summary) or "full"
    attention: bool = False
    prompt: bool = False  # prefill telemetry
    moe: bool = False
    encoder: bool = False  # seq2seq encoder summary
    layers: tuple[int, ...] | None = None  # decoder layers to capture; None = all
    step_stride: int = 1  # capture layer data every n-th step (logits are every step)
    cuda_graphs: bool = True  # replay the fixed-shape reduce as one CUDA graph per step on GPUs

    @property
    def needs_layers(self) -> bool:
        """Whether any tap inside the model is needed (logits alone need none)."""
        return self.hidden != "off" or self.attention or self.moe or self.prompt or self.encoder

    @classmethod
    def for_mode(
        cls, mode: str, layers: tuple[int, ...] | None = None, step_stride: int = 1, cuda_graphs: bool = True
    ) -> CapturePlan:
        """The plan of a capture mode (``off``, ``summary``, ``full`` or ``on_risk``)."""
        if mode == "off":
            return cls(signals=False)
        if mode == "summary":
            return cls(hidden="norm", layers=layers, step_stride=step_stride, cuda_graphs=cuda_graphs)
        # "full" and "on_risk" capture everything on the device; on_risk decides later what to emit.
        return cls(
            hidden="full",
            attention=True,
            prompt=True,
            moe=True,
            encoder=True,
            layers=layers,
            step_stride=step_stride,
            cuda_graphs=cuda_graphs,
        )
