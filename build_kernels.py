"""Build the C kernels in c/ into the extension module loop_tui._kernels (CFFI, API mode).

Two routes produce the same file, loop_tui/_kernels<EXT_SUFFIX>:
  * `python build_kernels.py`        (what `make build` runs; also used by `make sanitize`)
  * `pip install -e .` / setup.py     (setuptools reads `ffibuilder` through cffi_modules)
Either route first deletes any other loop_tui/_kernels*.so, so a stale build from the other
route can never shadow a fresh one.

No -march flag: AVX2 and AVX-512 code lives in kernels_avx2.c / kernels_avx512.c under
`#pragma GCC target`, and runtime.c picks one at load time. -ffp-contract=fast restores the
FMA contraction that -std=c99 turns off; -fno-math-errno and -fno-trapping-math let GCC
vectorise sqrtf and the branch-free exp (nothing here reads errno or FP exception flags).
LOOP_SANITIZE=1 builds with ASan and UBSan.
"""

import glob
import os
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
    "-fopenmp",
    "-Wall",
    "-Wextra",
    "-Wno-unknown-pragmas",
]
LDFLAGS = ["-fopenmp"]
if os.environ.get("LOOP_SANITIZE") == "1":
    CFLAGS += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-O2"]
    LDFLAGS += ["-fsanitize=address,undefined"]


def _cdef() -> str:
    """The public headers minus preprocessor lines (cffi's parser takes plain declarations)."""
    text = []
    for name in HEADERS:
        with open(os.path.join(ROOT, "c", name)) as f:
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
    os.chdir(ROOT)
    os.environ["LOOP_FORCE_REBUILD"] = "1"
    _remove_stale_modules()
    print(ffibuilder.compile(tmpdir=ROOT, verbose=False))
