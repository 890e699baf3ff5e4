# loop_tui — every target installs what it needs first, so each works alone on a fresh machine.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
SO      := $(shell python3 -c "import sysconfig;print('loop_tui/_kernels'+sysconfig.get_config_var('EXT_SUFFIX'))")
CSRC    := $(wildcard c/*.c c/*.h c/*.def) build_kernels.py
export RAYON_NUM_THREADS := 1
export LOOP_CACHE_DIR ?= $(CURDIR)/.cache

.PHONY: install build demo test test-arm64 lint bench sanitize clean system-deps FORCE

# CC=clang builds the kernels with Clang and its OpenMP runtime, libomp (make test CC=clang)
system-deps:
	@command -v gcc >/dev/null || (apt-get update && apt-get install -y --no-install-recommends build-essential)
	@case "$(CC)" in *clang*) [ "$$(uname)" = Darwin ] || echo '#include <omp.h>' | $(CC) -fopenmp -x c -E - >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends clang libomp-dev) || \
	  { echo "$(CC) has no OpenMP here: install Clang's libomp (Debian: apt install clang libomp-dev)"; exit 1; };; esac
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

# pip install -e builds the module once; C edits later are rebuilt here (editable installs do not),
# and so is a module some other compiler built (build/compiler names the last one)
build/compiler: FORCE
	@mkdir -p build && echo "$(CC)" | cmp -s - $@ || echo "$(CC)" > $@

$(SO): $(CSRC) build/compiler | $(STAMP)
	$(if $(filter default,$(origin CC)),,CC="$(CC)") $(PY) build_kernels.py

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
	$(MAKE) test-arm64

# The kernels on aarch64, shown under emulation: the C library cross-built with Debian's
# gcc-aarch64-linux-gnu (warnings are errors), and every op and the GEMM on awkward shapes replayed
# under qemu-aarch64 user mode against float64 references computed here (tests/arm64/make_cases.py),
# on the neon and generic ISAs with 1 and 2 threads (tests/arm64/replay.c). About 2 minutes.
ARM64_CC ?= aarch64-linux-gnu-gcc
ARM64_SYSROOT ?= /usr/aarch64-linux-gnu
test-arm64: install
	@command -v $(ARM64_CC) >/dev/null && command -v qemu-aarch64 >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user) || \
	  { echo "test-arm64: needs $(ARM64_CC) and qemu-aarch64 (Debian: gcc-aarch64-linux-gnu qemu-user)"; exit 1; }
	rm -rf build/arm64 && mkdir -p build/arm64
	$(PY) -m tests.arm64.make_cases build/arm64/cases
	$(ARM64_CC) $$(CC=$(ARM64_CC) $(PY) build_kernels.py --print-cflags) -Werror -Ic c/*.c tests/arm64/replay.c \
	  -o build/arm64/replay -lm
	QEMU_LD_PREFIX=$(ARM64_SYSROOT) qemu-aarch64 build/arm64/replay build/arm64/cases

# quality_table's budgets in minutes of training each (the full table, 5,15,30, takes hours)
QUALITY_MINUTES ?= 5

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
	$(PY) benchmarks/quality_table.py --minutes $(QUALITY_MINUTES)
	$(PY) benchmarks/generate_table.py
	$(PY) benchmarks/train_table.py --config gpt2_small --steps 2 --precision fp32 --torch-compile
	$(PY) benchmarks/mpi_table.py
	$(PY) benchmarks/mpi_scaling.py
	$(PY) benchmarks/dashboard_overhead.py --rounds 6
	$(PY) benchmarks/dashboard_overhead.py --interleave 3 --steps 38

# Kernels rebuilt with ASan+UBSan (by GCC, whose runtimes are preloaded) into a separate copy of
# the package (build/sanitize, so the normal build is untouched), then the kernel tests run there
# on every ISA this CPU has.
sanitize: install
	rm -rf build/sanitize && mkdir -p build/sanitize/loop_tui build/sanitize/tests
	cp build_kernels.py build/sanitize/ && mkdir build/sanitize/c && cp c/*.c c/*.h c/*.def build/sanitize/c/
	cp -r loop_tui/*.py loop_tui/configs loop_tui/kernels loop_tui/model loop_tui/data loop_tui/train build/sanitize/loop_tui/
	cp tests/__init__.py tests/conftest.py tests/reference.py tests/test_kernels.py tests/test_bf16.py tests/test_train.py tests/test_generate.py tests/corpora.py build/sanitize/tests/
	cd build/sanitize && CC=gcc LOOP_SANITIZE=1 ../../$(PY) build_kernels.py >/dev/null
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
