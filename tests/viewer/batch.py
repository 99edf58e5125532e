"""A real SmolLM2 batch in OTLP JSON files, for the run page's sequence picker: ``python -m tests.viewer.batch OUT``.

Four prompts, greedy, content captured: one of them ("one two one two ...") loops, so the riskiest sequence is
not sequence 0. `corevital run` generates one sequence, so this writes the batch through the library as an
application would (``configure`` and ``instrument``).
"""

from __future__ import annotations

import sys

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, configure
from opentelemetry_instrumentation_corevital.cli import load_smollm2

PROMPTS = [
    "The sky is blue because",
    "one two one two one two one two one two one two",
    "Name three colours:",
    "hello hello hello hello hello hello hello hello",
]


def main(out: str) -> None:
    config = configure(exporters="otlp-json", out=out)
    CoreVitalInstrumentor().instrument(report_log=True, capture_content=True, **config.instrument_kwargs())
    tokenizer, model = load_smollm2()
    tokenizer.padding_side = "left"
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    model.generate(**inputs, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    config.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
