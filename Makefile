# Two entry points for a fresh machine: `make demo` and `make test`. Each sets everything up first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.package-lock.json
VIEWER_DIR := src/sharp_dataset_pipeline/ops/gallery/viewer
VIEWER_STAMP := $(VIEWER_DIR)/node_modules/.package-lock.json

.PHONY: demo test setup setup-node setup-spz-reference lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

# splat-transform (and a Node 22 binary for it) for the .spz/.sog/.compressed.ply/.html formats.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund

# The gallery's offline 3D viewer (PlayCanvas), copied into the site at build time.
$(VIEWER_STAMP): $(VIEWER_DIR)/package.json $(VIEWER_DIR)/package-lock.json
	npm ci --no-audit --no-fund --prefix $(VIEWER_DIR)

setup: $(STAMP)
setup-node: $(NODE_STAMP) $(VIEWER_STAMP)

# Optional: Niantic's reference SPZ library (PyPI alspz, built from source against the system's libzstd-dev),
# the second independent decoder of tests/splat/test_spz_readers.py. scripts/cmake/ maps Debian's zstd CMake
# targets onto the name alspz's build looks for.
setup-spz-reference: $(STAMP)
	SKBUILD_CMAKE_ARGS="-Dzstd_DIR=$(CURDIR)/scripts/cmake;-DCMAKE_POSITION_INDEPENDENT_CODE=ON" \
		$(BIN)/pip install --quiet -e ".[spz-reference]"

# The main job on the embedded default: bundled sample photos -> planar predictor -> local store.
demo: $(STAMP)
	$(BIN)/sharp-dataset run --source samples --predictor planar --store local:sharp-dataset-out

test: $(STAMP) $(NODE_STAMP) $(VIEWER_STAMP)
	$(BIN)/python -m pytest -q -rs

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP) $(NODE_STAMP)
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_ply.py

clean:
	rm -rf $(VENV) node_modules $(VIEWER_DIR)/node_modules runs sharp-dataset-out gallery
