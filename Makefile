# Switchyard's entry points. The README names two of them:
#   make run    compile and show the bundled example model
#   make test   run the whole test suite
# Both install what is missing and build first.

BUILD_DIR ?= build
JOBS ?= 2
PYTHON ?= python3
LLVM_PREFIX ?= /usr/lib/llvm-22
EXAMPLE ?= examples/switch-base-8.yaml
RUN_ARGS ?= --seed 0 --batch 1

MOE_OPT := $(BUILD_DIR)/bin/moe-opt
MOEC := $(BUILD_DIR)/bin/moec
EXAMPLE_EXE := $(BUILD_DIR)/examples/$(basename $(notdir $(EXAMPLE)))

.PHONY: all deps configure build python run test check-lit check-python bench docs clean

all: build

deps:
	@PYTHON=$(PYTHON) scripts/install-deps.sh

$(BUILD_DIR)/build.ninja: | deps
	cmake -G Ninja -S . -B $(BUILD_DIR) \
	  -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
	  -DMLIR_DIR=$(LLVM_PREFIX)/lib/cmake/mlir \
	  -DLLVM_EXTERNAL_LIT=$(LLVM_PREFIX)/bin/lit \
	  -DPython3_EXECUTABLE=$$(command -v $(PYTHON))

configure: deps $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	@mkdir -p $(BUILD_DIR)/examples
	@echo "== moec $(EXAMPLE) -o $(EXAMPLE_EXE)"
	@$(MOEC) $(EXAMPLE) -o $(EXAMPLE_EXE) --mlir-timing 2>&1 | tail -n 6
	@echo "== $(EXAMPLE_EXE) $(RUN_ARGS) --stats $(EXAMPLE_EXE).stats.json"
	@$(EXAMPLE_EXE) $(RUN_ARGS) --stats $(EXAMPLE_EXE).stats.json

check-lit: build
	cmake --build $(BUILD_DIR) --target check-switchyard

# The switchyard Python package (python-bindings/), built against this
# checkout into $(BUILD_DIR)/python-bindings and installed into $(PYTHON).
python: build
	$(PYTHON) -m pip install -q --no-build-isolation \
	  -C build-dir=$(abspath $(BUILD_DIR))/python-bindings ./python-bindings

check-python: build python
	SWITCHYARD_BUILD_DIR=$(abspath $(BUILD_DIR)) $(PYTHON) -m pytest -q -n auto test/reference test/Integration test/python

test: check-lit check-python

# The CPU benchmark against PyTorch eager (bench/RESULTS.md). PyTorch comes
# from Debian (python3-torch), with OpenBLAS as the system BLAS.
bench: python
	@scripts/install-deps.sh --bench
	$(PYTHON) bench/run.py --runs 9

# Refresh the generated docs in docs/ after an ODS or Passes.td change.
docs: configure
	cmake --build $(BUILD_DIR) --target MoEDialectDocGen MoEPassesDocGen ConversionPassesDocGen SwitchyardPassesDocGen
	cp $(BUILD_DIR)/docs/Dialects/MoEDialect.md docs/Dialects/
	cp $(BUILD_DIR)/docs/MoEPasses.md $(BUILD_DIR)/docs/ConversionPasses.md $(BUILD_DIR)/docs/SwitchyardPasses.md docs/

clean:
	rm -rf $(BUILD_DIR)
