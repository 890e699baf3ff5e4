"""Build the C kernels in c/ into the extension module loop_tui._kernels (CFFI, API mode).

Two routes produce the same file, loop_tui/_kernels<EXT_SUFFIX>:
  * `python build_kernels.py`        (what `make build` runs; also used by `make sanitize`)
  * `pip install -e .` / setup.py     (setuptools reads `ffibuilder` through cffi_modules)
Either route first deletes any other loop_tui/_kernels*.so, so a stale build from the other
route can never shadow a fresh one.

No -march flag: AVX2 and AVX-512 code lives in kernels_avx2.c / kernels_avx512.c under a target
pragma, and runtime.c picks one at load time. Every file compiles on every architecture: the x86
ones are empty outside x86-64, kernels_neon.c outside aarch64. -ffp-contract=fast restores the
FMA contraction that -std=c99 turns off; -fno-math-errno and -fno-trapping-math let the compiler
vectorise sqrtf and the branch-free exp (nothing here reads errno or FP exception flags).
CC=clang builds with Clang and its libomp (apt: clang libomp-dev); on macOS, Homebrew's libomp.
LOOP_SANITIZE=1 builds with ASan and UBSan. `python build_kernels.py --print-cflags` prints the
compile flags alone (the aarch64 cross-build of `make test-arm64` uses them).
"""

import glob
import os
import shlex
import subprocess
import sys
import sysconfig

from cffi import FFI

ROOT = os.path.dirname(os.path.abspath(__file__))
HEADERS = ["runtime.h", "gemm.h", "ops.h"]
CFLAGS = [
    "-O3",
    "-std=c99",
    "-ffp-contract=fast",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-D_DEFAULT_SOURCE",  # clock_gettime under -std=c99 with glibc
    "-Wall",
    "-Wextra",
    "-Wno-unknown-pragmas",
]


def _compiler_is_clang() -> bool:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    try:
        out = subprocess.run([*shlex.split(cc), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "clang" in out.lower()


def _openmp_flags() -> tuple[list[str], list[str]]:
    """(compile, link) flags for OpenMP: -fopenmp (libgomp with GCC, libomp with Clang on Linux);
    Apple's Clang takes Homebrew's libomp through -Xpreprocessor."""
    if sys.platform != "darwin":
        return ["-fopenmp"], ["-fopenmp"]
    prefix = os.environ.get("LIBOMP_PREFIX") or next(
        (p for p in ("/opt/homebrew/opt/libomp", "/usr/local/opt/libomp") if os.path.isdir(p)), ""
    )
    if not prefix:
        sys.exit("build_kernels.py: OpenMP's libomp not found: `brew install libomp` (or set LIBOMP_PREFIX)")
    return ["-Xpreprocessor", "-fopenmp", f"-I{prefix}/include"], [f"-L{prefix}/lib", "-lomp"]


OMP_CFLAGS, OMP_LDFLAGS = _openmp_flags()
CFLAGS += OMP_CFLAGS
if _compiler_is_clang():
    # Clang 14 leaves a few `omp simd` loops scalar (max reductions, the exp loops) and says so per
    # loop; GCC vectorises them. A missed vectorisation is no defect of the code.
    CFLAGS += ["-Wno-pass-failed"]
LDFLAGS = list(OMP_LDFLAGS)
if os.environ.get("LOOP_SANITIZE") == "1":
    CFLAGS += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-O2"]
    LDFLAGS += ["-fsanitize=address,undefined"]


def _cdef() -> str:
    """The public headers as plain declarations (cffi's parser takes no preprocessor lines): ops.h
    goes through the C preprocessor (its prototypes come from ops.def's X-macros), the others lose
    their '#' lines."""
    text = []
    for name in HEADERS:
        path = os.path.join(ROOT, "c", name)
        if name == "ops.h":
            cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
            cmd = [*cc, "-E", "-P", "-DLOOP_CDEF", "-I" + os.path.join(ROOT, "c"), path]
            try:
                text.append(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            except (OSError, subprocess.CalledProcessError) as e:
                sys.exit(f"build_kernels.py: `{' '.join(cmd)}` failed: {getattr(e, 'stderr', '') or e}")
            continue
        with open(path) as f:
            text += [line for line in f if not line.lstrip().startswith("#")]
    return "".join(text)


def _remove_stale_modules() -> None:
    fresh = "_kernels" + sysconfig.get_config_var("EXT_SUFFIX")
    for path in glob.glob(os.path.join(ROOT, "loop_tui", "_kernels*.so")):
        if os.path.basename(path) != fresh or os.environ.get("LOOP_FORCE_REBUILD") == "1":
            os.remove(path)


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "loop_tui._kernels",
    "".join(f'#include "{h}"\n' for h in HEADERS),
    # relative paths: setuptools rejects absolute ones; compile() below runs from ROOT
    sources=sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "c", "*.c"))),
    include_dirs=["c"],
    extra_compile_args=CFLAGS,
    extra_link_args=LDFLAGS,
    py_limited_api=False,  # setuptools would otherwise name it _kernels.abi3.so, unlike compile()
)
_remove_stale_modules()

if __name__ == "__main__":
    if sys.argv[1:] == ["--print-cflags"]:
        print(" ".join(CFLAGS))
        sys.exit(0)
    os.chdir(ROOT)
    os.environ["LOOP_FORCE_REBUILD"] = "1"
    _remove_stale_modules()
    print(ffibuilder.compile(tmpdir=ROOT, verbose=False))
