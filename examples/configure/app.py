"""CoreVital's own exporters, built by configure() and handed to the instrumentor.

    python examples/configure/app.py        # writes corevital-data/{traces,metrics,logs}.jsonl and corevital.sqlite3

The instrumentor takes providers only; configure() builds them (and the report exporters) from keywords or the
OTEL_INSTRUMENTATION_COREVITAL_* variables, and stops them when the block ends.
"""

import os

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, configure
from opentelemetry_instrumentation_corevital.cli import load_smollm2

tokenizer, model = load_smollm2()
messages = [{"role": "user", "content": os.environ.get("PROMPT", "What is the capital of France?")}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)

with configure(exporters="otlp-json,sqlite", out=os.environ.get("OUT", "corevital-data")) as config:
    CoreVitalInstrumentor().instrument(capture="full", **config.instrument_kwargs())
    try:
        output = model.generate(**inputs, max_new_tokens=int(os.environ.get("MAX_NEW_TOKENS", "24")), do_sample=False)
    finally:
        CoreVitalInstrumentor().uninstrument()
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
print("wrote", *map(str, config.files), sep="\n  ")
