"""Runs compiled Switchyard code on numpy arrays, for the execution tests.

A test builds a `func.func` at the layer level of the moe dialect, and
`compile_function` lowers it with the named CPU pipeline
(`moe-opt --switchyard-cpu-pipeline`), translates it to LLVM IR
(`mlir-translate`), and links it into a shared library with clang-22 for
the host CPU,
OpenMP and the runtime's allocator (the compiled code allocates its buffers
from it; the library exports `harness_free` for the results).
`CompiledFunction.__call__` passes numpy arrays as memref descriptors
through the `llvm.emit_c_interface` wrapper and returns the results as numpy
arrays (copied out, the callee's buffers freed).
"""

import ctypes
import hashlib
import os
import pathlib
import subprocess
import tempfile

import ml_dtypes
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("SWITCHYARD_BUILD_DIR", ROOT / "build"))
LLVM_BIN = pathlib.Path(os.environ.get("LLVM_BIN", "/usr/lib/llvm-22/bin"))
MOE_OPT = BUILD / "bin" / "moe-opt"

MLIR_TYPES = {
    np.dtype(np.float32): "f32",
    np.dtype(ml_dtypes.bfloat16): "bf16",
    np.dtype(np.float16): "f16",
    np.dtype(np.int64): "i64",
    np.dtype(np.bool_): "i1",
}
NUMPY_TYPES = {v: k for k, v in MLIR_TYPES.items()}

# Exported from each library: frees a result through the allocator of the
# runtime (lib/Runtime/Workspace.cpp), whose functions the library keeps
# hidden.
_HARNESS_FREE = """
#include <stddef.h>
void _mlir_memref_to_llvm_free(void *);
__attribute__((visibility("default"))) void harness_free(void *p) {
  _mlir_memref_to_llvm_free(p);
}
"""


def tensor_type(shape, dtype):
    """`tensor<2x?x16xf32>` for a shape whose None entries are dynamic."""
    dims = "".join(("?" if d is None else str(d)) + "x" for d in shape)
    return f"tensor<{dims}{dtype}>"


def _descriptor_class(rank):
    fields = [("allocated", ctypes.c_void_p), ("aligned", ctypes.c_void_p),
              ("offset", ctypes.c_int64)]
    if rank:
        fields += [("sizes", ctypes.c_int64 * rank),
                   ("strides", ctypes.c_int64 * rank)]
    return type(f"MemRef{rank}D", (ctypes.Structure,), {"_fields_": fields})


def _descriptor(array):
    array = np.ascontiguousarray(array)
    desc = _descriptor_class(array.ndim)()
    desc.allocated = desc.aligned = array.ctypes.data
    desc.offset = 0
    if array.ndim:
        desc.sizes[:] = array.shape
        desc.strides[:] = [s // array.itemsize for s in array.strides]
    return desc, array


def _to_numpy(desc, rank, dtype):
    """Copies a returned (contiguous, identity-layout) memref into numpy."""
    dtype = np.dtype(dtype)
    shape = tuple(desc.sizes[:]) if rank else ()
    count = int(np.prod(shape)) if shape else 1
    if count == 0:
        return np.empty(shape, dtype=dtype)
    expected = np.empty(shape, dtype=np.uint8).strides  # element strides
    if rank and tuple(desc.strides[:]) != expected:
        raise ValueError(f"result has strides {tuple(desc.strides[:])}, "
                         f"expected contiguous {expected}")
    address = desc.aligned + desc.offset * dtype.itemsize
    buffer = (ctypes.c_uint8 * (count * dtype.itemsize)).from_address(address)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape).copy()


class CompilationError(RuntimeError):
    pass


def _run(cmd, what):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise CompilationError(f"{what} failed ({' '.join(map(str, cmd))}):\n"
                               f"{proc.stderr[-4000:]}")
    return proc


class CompiledFunction:
    def __init__(self, library, name, result_types):
        self._lib = ctypes.CDLL(str(library))
        self._fn = getattr(self._lib, "_mlir_ciface_" + name)
        self._fn.restype = None
        self._free = self._lib.harness_free
        self._free.argtypes = [ctypes.c_void_p]
        self.result_types = result_types  # [(rank, numpy dtype)]

    def __call__(self, *arrays):
        keep = []
        arg_descs = []
        for a in arrays:
            desc, contiguous = _descriptor(a)
            keep.append(contiguous)
            arg_descs.append(desc)
        result_classes = [_descriptor_class(r) for r, _ in self.result_types]
        if len(result_classes) == 1:
            results = result_classes[0]()
            views = [results]
        else:
            struct = type("Results", (ctypes.Structure,),
                          {"_fields_": [(f"r{i}", c) for i, c in
                                        enumerate(result_classes)]})
            results = struct()
            views = [getattr(results, f"r{i}") for i in range(len(result_classes))]
        self._fn(ctypes.byref(results), *[ctypes.byref(d) for d in arg_descs])
        outs = []
        freed = set()
        for view, (rank, dtype) in zip(views, self.result_types):
            outs.append(_to_numpy(view, rank, dtype))
        for view in views:
            if view.allocated and view.allocated not in freed:
                freed.add(view.allocated)
                self._free(view.allocated)
        return outs


def compile_function(mlir_text, name, result_types, workdir=None,
                     pipeline_options=""):
    """Compiles the function `name` of `mlir_text` for the CPU.

    `result_types` lists (rank, numpy dtype) of each result. The function must
    carry the `llvm.emit_c_interface` attribute.
    """
    workdir = pathlib.Path(workdir or tempfile.mkdtemp(prefix="switchyard-"))
    src = workdir / f"{name}.mlir"
    src.write_text(mlir_text)
    lowered = workdir / f"{name}.llvm.mlir"
    _run([MOE_OPT, src, f"--switchyard-cpu-pipeline={pipeline_options}"
          if pipeline_options else "--switchyard-cpu-pipeline", "-o", lowered],
         "moe-opt --switchyard-cpu-pipeline")
    ll = workdir / f"{name}.ll"
    _run([LLVM_BIN / "mlir-translate", "--mlir-to-llvmir", lowered, "-o", ll],
         "mlir-translate")
    # dlopen caches libraries by path: a new text gets a new file name.
    digest = hashlib.sha1(mlir_text.encode()).hexdigest()[:12]
    library = workdir / f"lib{name}-{digest}.so"
    free_src = workdir / "harness_free.c"
    free_src.write_text(_HARNESS_FREE)
    # For the host CPU, as moec compiles: a back-end failure that only the
    # host's features trigger (bf16 vectors on AVX-512 BF16) shows here too.
    _run(["clang-22", "-O2", "-march=native", "-shared", "-fPIC", "-fopenmp",
          "-Wno-override-module", ll, free_src, BUILD / "lib" / "libSwitchyardRuntime.a",
          "-o", library, "-lm", "-lstdc++"], "clang-22")
    return CompiledFunction(library, name, result_types)
