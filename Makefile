# loop_tui — every target installs what it needs first, so each works alone on a fresh machine.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
SO      := $(shell python3 -c "import sysconfig;print('loop_tui/_kernels'+sysconfig.get_config_var('EXT_SUFFIX'))")
CSRC    := $(wildcard c/*.c c/*.h) build_kernels.py
export RAYON_NUM_THREADS := 1
export LOOP_CACHE_DIR ?= $(CURDIR)/.cache

.PHONY: install build demo test lint bench sanitize clean system-deps

system-deps:
	@command -v gcc >/dev/null || (apt-get update && apt-get install -y --no-install-recommends build-essential)
	@python3 -c "import venv, ensurepip" 2>/dev/null || (apt-get update && apt-get install -y --no-install-recommends python3-venv python3-dev)
	@command -v tmux >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends tmux) || echo "tmux unavailable: its test will skip"

$(STAMP): pyproject.toml setup.py | system-deps
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dev]"
	@# MPI data parallelism (mpi4py + MPICH's wheel, mpiexec in .venv/bin); optional: its tests skip without it
	-$(PIP) install -q -e ".[mpi]" 2>/dev/null || echo "mpi4py/mpich unavailable: the MPI tests will skip"
	@# --report-to tensorboard (tensorboardX writes, tensorboard reads); optional: its tests skip without it
	-$(PIP) install -q -e ".[tensorboard]" 2>/dev/null || echo "tensorboardX/tensorboard unavailable: the TensorBoard tests will skip"
	@# Parquet input and GGUF export; optional: their tests skip without them
	-$(PIP) install -q -e ".[parquet]" 2>/dev/null || echo "pyarrow unavailable: Parquet input and its tests are off"
	-$(PIP) install -q -e ".[gguf]" 2>/dev/null || echo "gguf unavailable: GGUF export and its tests are off"
	@# llama.cpp itself, to check GGUF exports (built from source once, minutes; pip caches the wheel)
	-CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
	  -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF" $(PIP) install -q "llama-cpp-python==0.3.36" 2>/dev/null \
	  || echo "llama-cpp-python unavailable: the llama.cpp check of GGUF exports will skip"
	@# the PyTorch yardstick for `make bench` (the CPU wheel); optional, never needed by tests
	-$(PIP) install -q "torch==2.13.0" 2>/dev/null || echo "torch unavailable: bench runs without the PyTorch yardstick"
	touch $(STAMP)

install: $(STAMP) $(SO)

# pip install -e builds the module once; C edits later are rebuilt here (editable installs do not)
$(SO): $(CSRC) | $(STAMP)
	$(PY) build_kernels.py

build: $(SO)

demo: install
	$(PY) -m loop_tui train default --steps 300

LINTED := loop_tui tests benchmarks build_kernels.py setup.py

lint: install
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m mypy

test: install lint
	$(PY) -m pytest -q -x -p no:cacheprovider tests
	$(MAKE) sanitize

bench: install
	$(PY) -m pytest -q benchmarks --benchmark-autosave --benchmark-columns=median,ops -p no:cacheprovider
	$(PY) benchmarks/gemm_table.py
	$(PY) benchmarks/gemm_table.py --precision bf16
	$(PY) benchmarks/bf16_weight_copy.py
	$(PY) benchmarks/gemm_paths.py
	$(PY) benchmarks/train_table.py --torch-compile
	$(PY) benchmarks/opencl_table.py
	$(PY) benchmarks/tokenizer_memory.py
	$(PY) benchmarks/attention_table.py
	$(PY) benchmarks/generate_table.py
	$(PY) benchmarks/train_table.py --config gpt2_small --steps 2 --precision fp32 --torch-compile
	$(PY) benchmarks/mpi_table.py
	$(PY) benchmarks/mpi_scaling.py
	$(PY) benchmarks/dashboard_overhead.py --rounds 6
	$(PY) benchmarks/dashboard_overhead.py --interleave 3 --steps 38

# Kernels rebuilt with ASan+UBSan into a separate copy of the package (build/sanitize, so the
# normal build is untouched), then the kernel tests run there on every ISA this CPU has.
sanitize: install
	rm -rf build/sanitize && mkdir -p build/sanitize/loop_tui build/sanitize/tests
	cp build_kernels.py build/sanitize/ && mkdir build/sanitize/c && cp c/*.c c/*.h build/sanitize/c/
	cp -r loop_tui/*.py loop_tui/configs loop_tui/kernels loop_tui/model loop_tui/data loop_tui/train build/sanitize/loop_tui/
	cp tests/__init__.py tests/conftest.py tests/reference.py tests/test_kernels.py tests/test_bf16.py tests/test_train.py tests/test_generate.py tests/corpora.py build/sanitize/tests/
	cd build/sanitize && LOOP_SANITIZE=1 ../../$(PY) build_kernels.py >/dev/null
	isas="$$($(PY) -c "from loop_tui import kernels; print(' '.join(kernels.available_isas()))")"; \
	test -n "$$isas" || { echo "sanitize: could not list ISAs"; exit 1; }; \
	cd build/sanitize && for isa in $$isas; do \
	  echo "sanitize: kernel tests on $$isa with ASan+UBSan"; \
	  LOOP_ISA=$$isa LOOP_SANITIZED=1 ASAN_OPTIONS=detect_leaks=0 \
	  LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ../../$(PY) -m pytest -q -x -p no:cacheprovider tests/test_kernels.py tests/test_bf16.py tests/test_generate.py -k "not hypothesis" || exit 1; \
	done

clean:
	rm -rf build .venv loop_tui/_kernels* c/*.o .pytest_cache .benchmarks .cache *.egg-info
