# modelport: `make demo` serves the demo models; `make test` runs every check. Both create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo serve test lint typecheck unit bench mcp-checks api-checks clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed"'
	@echo "modelport: installing into $(VENV) with uv (about 20 s the first time; pip alone took ~70 s here)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.5,<1" || echo "uv unavailable: using pip"
	@if [ -x $(BIN)/uv ]; then $(BIN)/uv pip install --python $(BIN)/python -e '.[dev]'; \
	 else $(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]'; fi
	@touch $(STAMP)

demo: install  ## create the embedded demo registry (idempotent) and serve it on 127.0.0.1:8000
	$(BIN)/modelport demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

test: lint typecheck  ## lint, layer contracts, mypy, then the whole test suite
	$(BIN)/pytest -q

bench: install  ## modelport vs mlflow models serve vs a bare uvicorn echo, side by side (needs wrk; a few minutes); RAY=1 adds the Ray mode
	$(BIN)/python -m bench.suite
	@if [ -n "$(RAY)" ]; then $(MAKE) --no-print-directory bench-ray; fi

.PHONY: test-ray bench-ray
test-ray: install  ## the Ray Serve tests (needs the ray extra), in a loopback-only network namespace (root)
	$(BIN)/python -c 'import ray.serve' 2>/dev/null || $(BIN)/uv pip install --python $(BIN)/python -e '.[dev,ray]' || $(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	RAY_USAGE_STATS_ENABLED=0 unshare -n bash -c 'ip link set lo up && $(BIN)/pytest -q tests/integration/test_ray.py'

bench-ray: install  ## Ray Serve ingress options vs modelport serve, side by side (needs the ray extra and wrk)
	$(BIN)/python -m bench.ray_ingress

.PHONY: bench-full bench-runtime
bench-full: install  ## every size x concurrency x body format, 10 s per point; then overload (1x-10x capacity)
	$(BIN)/python -m bench.suite --full
	$(BIN)/python -m bench.overload

bench-runtime: install  ## the runtime alone: raw onnxruntime and the batcher, no HTTP
	$(BIN)/python bench/runtime_bench.py

.PHONY: bench-batch
bench-batch: install  ## batch scoring: modelport score vs raw onnxruntime vs pyfunc vs mlflow models predict; RSS at 10M rows
	$(BIN)/python -m bench.batch_score --rss-rows 10000000

api-checks: install  ## schemathesis against the OpenAPI document of a demo server (0 server errors, conformance)
	.ci/api-checks.sh

mcp-checks: install  ## MCP Inspector CLI + conformance suite against a demo server
	.ci/mcp-checks.sh

clean:
	rm -rf $(VENV) .modelport .pytest_cache .ruff_cache .mypy_cache
