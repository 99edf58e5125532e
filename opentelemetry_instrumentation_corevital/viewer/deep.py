"""Deep-capture data (schema 1.1, ``capture="full"``): per-layer matrices and the prompt analysis.

Matrices are ``[layer][step]`` lists: row *r* is decoder layer ``indices[r]``,
column *c* is generation step ``steps[c]``; ``null`` marks a value that was
not finite or not captured. Names are those of docs/report-format.md; a
matrix of any other name is shown too, so later additions need no viewer change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import names as n
from . import otlp

#: Known layer matrices, in the order the viewer offers them, with their labels.
LAYER_LABELS = {
    "hidden_norm": "hidden-state L2 norm",
    "attn_entropy": "attention entropy (0–1, mean over heads)",
    "attn_collapsed_fraction": "collapsed attention heads (fraction)",
    "hidden_mean": "hidden-state mean",
    "hidden_std": "hidden-state std",
    "hidden_max_abs": "hidden-state max |x|",
    "hidden_nonfinite": "non-finite hidden values",
    "hidden_cos_prev": "cosine to the previous layer",
    "update_ratio": "update ratio ‖Δh‖/‖h‖",
    "attn_entropy_min": "attention entropy, lowest head",
    "attn_max_weight": "largest attention weight",
    "attn_sink_mass": "attention sink mass",
    "attn_prompt_mass": "attention on the prompt (lookback ratio)",
    "router_entropy": "MoE router entropy",
    "expert_load_balance": "MoE expert load balance",
}
#: The three heatmaps the run page opens with, when present.
HEADLINE = ("hidden_norm", "attn_entropy", "attn_collapsed_fraction")
#: What only ``capture="full"`` records (``summary`` keeps hidden-state statistics only).
FULL_ONLY = (
    "attn_entropy",
    "attn_collapsed_fraction",
    "update_ratio",
    "hidden_cos_prev",
    "attn_sink_mass",
    "attn_prompt_mass",
)
PROMPT_LAYER_LABELS = {
    "hidden_norm": "hidden-state norm",
    "attn_sparsity": "attention sparsity",
    "basin": "basin score (mean)",
    "basin_min": "basin score (lowest head)",
}


@dataclass
class LayerData:
    """A sequence's per-layer matrices ([layer][step]) ready to chart."""

    indices: list[int]  # decoder layer of each row
    steps: list[int]  # generation step of each column
    matrices: dict[str, list[list[float | None]]]

    def names(self) -> list[str]:
        """The matrices present, known ones in their usual order, then any others by name."""
        known = [k for k in LAYER_LABELS if k in self.matrices]
        return known + sorted(k for k in self.matrices if k not in LAYER_LABELS)

    def cells(self, name: str) -> list[dict[str, Any]]:
        """(layer, step, value) for every cell of one matrix; missing values are kept as None."""
        return [
            {"layer": layer, "step": step, "value": row[c] if c < len(row) else None}
            for layer, row in zip(self.indices, self.matrices[name])
            for c, step in enumerate(self.steps)
        ]

    def layer_means(self) -> list[dict[str, Any]]:
        """Per layer, the mean over captured steps of every matrix (None when no finite value)."""
        rows = []
        for r, layer in enumerate(self.indices):
            row: dict[str, Any] = {"layer": layer}
            for name in self.names():
                values = [v for v in self.matrices[name][r] if v is not None] if r < len(self.matrices[name]) else []
                row[name] = sum(values) / len(values) if values else None
            rows.append(row)
        return rows


def _matrix(value: Any) -> list[list[float | None]] | None:
    if not isinstance(value, list) or not value or not all(isinstance(row, list) for row in value):
        return None
    return [[otlp.finite(v) for v in row] for row in value]


def layer_data(sequence: dict[str, Any]) -> LayerData | None:
    """The sequence's ``layers`` block, or None when it was not captured."""
    block = sequence.get("layers")
    if not isinstance(block, dict):
        return None
    matrices = {k: m for k, v in block.items() if k not in ("indices", "steps") and (m := _matrix(v)) is not None}
    if not matrices:
        return None
    rows = max(len(m) for m in matrices.values())
    cols = max(len(row) for m in matrices.values() for row in m)
    indices = block.get("indices")
    steps = block.get("steps")
    return LayerData(
        indices=list(indices) if isinstance(indices, list) and len(indices) == rows else list(range(rows)),
        steps=list(steps) if isinstance(steps, list) and len(steps) == cols else list(range(cols)),
        matrices=matrices,
    )


@dataclass
class PromptData:
    """What the prompt pass measured: per-token surprisal and per-layer summaries."""

    surprisal: list[float | None]  # one per prompt token after the first
    perplexity: float | None
    layers: list[int]
    per_layer: dict[str, list[float | None]]  # name -> one value per entry of ``layers``
    tokens: int | None = None  # prompt length (padding excluded)
    first_position: int = 1  # position of surprisal[0]; a span keeps only the last 512 values

    def surprisal_rows(self) -> list[dict[str, Any]]:
        """Prompt position (0-based; 1 = the second token, the first with a prediction) and its surprisal."""
        return [{"position": self.first_position + i, "surprisal": v} for i, v in enumerate(self.surprisal)]

    def layer_rows(self) -> list[dict[str, Any]]:
        """One row per layer with every per-layer value, for a table or chart."""
        return [
            {
                "layer": layer,
                **{name: values[r] if r < len(values) else None for name, values in self.per_layer.items()},
            }
            for r, layer in enumerate(self.layers)
        ]


def prompt_data(sequence: dict[str, Any], report: dict[str, Any]) -> PromptData | None:
    """The sequence's ``prompt`` block (prefill analysis), or None when it was not captured."""
    block = sequence.get("prompt")
    if not isinstance(block, dict):
        return None
    surprisal = (
        [otlp.finite(v) for v in block.get("surprisal") or []] if isinstance(block.get("surprisal"), list) else []
    )
    per_layer = _per_layer(block, exclude=("surprisal", "perplexity", "layers", "tokens"))
    if not surprisal and not per_layer and block.get("perplexity") is None:
        return None
    count = max((len(v) for v in per_layer.values()), default=0)
    seq_layers = otlp.typed(sequence, "layers", dict, {})
    capture = otlp.typed(report, "capture", dict, {})
    candidates = [block.get("layers"), seq_layers.get("indices"), capture.get("layers")]
    layers = next((list(c) for c in candidates if isinstance(c, list) and len(c) == count), list(range(count)))
    tokens = block.get("tokens")
    return PromptData(
        surprisal=surprisal,
        perplexity=otlp.finite(block.get("perplexity")),
        layers=layers,
        per_layer=per_layer,
        tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
    )


def _per_layer(block: dict[str, Any], exclude: tuple[str, ...]) -> dict[str, list[float | None]]:
    """Every list of numbers in ``block`` (one value per layer), known names first."""
    names = [k for k in PROMPT_LAYER_LABELS if k in block] + sorted(k for k in block if k not in PROMPT_LAYER_LABELS)
    return {
        k: [otlp.finite(v) for v in block[k]]
        for k in names
        if k not in exclude
        and isinstance(block.get(k), list)
        and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in block[k])
    }


def encoder_rows(sequence: dict[str, Any]) -> list[dict[str, Any]]:
    """Seq2seq models: the ``encoder`` block as one row per encoder layer (empty when absent)."""
    block = sequence.get("encoder")
    if not isinstance(block, dict):
        return []
    per_layer = _per_layer(block, exclude=("indices",))
    count = max((len(v) for v in per_layer.values()), default=0)
    indices = otlp.typed(block, "indices", list, [])
    if len(indices) != count:
        indices = list(range(count))
    return [
        {"layer": layer, **{k: v[r] if r < len(v) else None for k, v in per_layer.items()}}
        for r, layer in enumerate(indices)
    ]


def span_layer_means(attrs: dict[str, Any], prefix: str, indices_key: str) -> list[dict[str, Any]]:
    """Per-layer means that a span carries (``corevital.layers.<name>`` over ``corevital.layers.indices``)."""
    indices = attrs.get(indices_key)
    if not isinstance(indices, list) or not indices:
        return []
    series = {
        key[len(prefix) :]: value
        for key, value in attrs.items()
        if key.startswith(prefix) and key != indices_key and isinstance(value, list) and len(value) == len(indices)
    }
    return [{"layer": layer, **{k: otlp.finite(v[r]) for k, v in series.items()}} for r, layer in enumerate(indices)]


def span_prompt(attrs: dict[str, Any]) -> PromptData | None:
    """What a full-capture span says of the prompt (``corevital.prompt.*``), for runs without their report."""
    surprisal = attrs.get(n.PROMPT_SURPRISAL)
    basin = attrs.get(n.PROMPT_BASIN)
    perplexity = otlp.finite(attrs.get(n.PROMPT_PERPLEXITY))
    if not isinstance(surprisal, list) and not isinstance(basin, list) and perplexity is None:
        return None
    surprisal = [otlp.finite(v) for v in surprisal] if isinstance(surprisal, list) else []
    tokens = otlp.typed(attrs, n.PROMPT_TOKENS, int, None)
    per_layer = {"basin": [otlp.finite(v) for v in basin]} if isinstance(basin, list) else {}
    indices = attrs.get(n.LAYERS_INDICES)
    count = len(per_layer.get("basin", []))
    layers = list(indices) if isinstance(indices, list) and len(indices) == count else list(range(count))
    first = tokens - len(surprisal) if tokens is not None and tokens > len(surprisal) else 1
    return PromptData(
        surprisal=surprisal,
        perplexity=perplexity,
        layers=layers,
        per_layer=per_layer,
        tokens=tokens,
        first_position=first,
    )
