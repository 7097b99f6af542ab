# The two commands that matter: `make demo` (set up, then scan the embedded default model)
# and `make test`.
VENV := .venv
DEMO_LANGUAGES := en,hi,fr,de,es,zh,ar,ru

.PHONY: setup demo test test-fast bench clean findings

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

# The tests also check GGUF exports in llama.cpp itself (llama-cpp-python builds it from source
# once) and 4-bit scans (bitsandbytes).
$(VENV)/.installed-test: $(VENV)/.installed
	EXTRAS=test,llamacpp,quant bash scripts/setup.sh
	touch $@

# 8 languages x 4 scoring texts cut to 48 tokens: all 72 heads of Gemma 3 270M in ~10 min on 2 CPU cores.
demo: setup
	$(VENV)/bin/langheads scan --model default --languages $(DEMO_LANGUAGES) --texts 4 --max-tokens 48 \
		--out runs/demo --overwrite

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest -q --durations=15

test-fast: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs

# Every number and figure of docs/findings.md: the default model on 24 languages (about 2 h on
# 2 CPU cores), then both real models on the same 4 languages (en, hi, zh, fr; 2 texts of 32
# tokens; about 10 min for Gemma, 50 min for Qwen) side by side (docs/findings/TWO_MODELS.md).
TWO := LANGS=en,hi,zh,fr TEXTS=2 MAX_TOKENS=32 KEEP=en,zh
findings: setup
	EVAL_LANGS=en,hi,fr,de,zh,ar bash scripts/findings.sh
	$(TWO) MODEL=default OUT=runs/findings-4-gemma DOCS=docs/findings/gemma-4 bash scripts/findings.sh
	$(TWO) MODEL=qwen2.5-coder-0.5b OUT=runs/findings-4-qwen DOCS=docs/findings/qwen-4 bash scripts/findings.sh
	$(VENV)/bin/python scripts/findings.py --two runs/findings-4-gemma runs/findings-4-qwen docs/findings/TWO_MODELS.md
