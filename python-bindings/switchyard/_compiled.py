"""switchyard.compile, CompiledModel and load: compiling through the same
pipeline as moec, and running the result through the artifact's C API."""

import ctypes
import json
import math
import os
import pathlib
import re
import shutil
import tempfile
import weakref

import ml_dtypes
import numpy as np

from . import _switchyard
from ._model import Model

_NUMPY = {"f32": np.dtype(np.float32), "bf16": np.dtype(ml_dtypes.bfloat16),
          "f16": np.dtype(np.float16)}
_STATUS = {1: ValueError, 2: OSError, 3: ValueError, 4: ValueError, 5: ValueError,
           6: RuntimeError}
# The runtime archives compiled models are linked with ship in the package;
# $SWITCHYARD_RUNTIME_DIR overrides them.
_RUNTIME = os.environ.get("SWITCHYARD_RUNTIME_DIR",
                          str(pathlib.Path(__file__).resolve().parent / "runtime"))
_DUMP = re.compile(r"^// -----// IR Dump After (.+?) //----- //$", re.M)


def _split_dumps(text):
    """[(pass, IR text)] from --mlir-print-ir-after-all output."""
    parts = _DUMP.split(text)
    return [(parts[i], parts[i + 1].strip("\n") + "\n") for i in range(1, len(parts) - 1, 2)]


def _source(model):
    if isinstance(model, Model):
        return model.yaml, model.file_name
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError("compile() takes a switchyard.Model or the path of a .yaml or "
                        f".mlir file, got {type(model).__name__}")
    path = pathlib.Path(model)
    if path.suffix in (".yaml", ".yml", ".mlir"):
        return path.read_text(), str(path)
    raise TypeError("compile() takes a switchyard.Model or the path of a .yaml or "
                    f".mlir file, got {model!r}")


class Lowered:
    """The IR of a model at a stage: `ir`, the `passes` that ran, and with
    print_ir_after_all the IR after each, `ir_after_all` [(pass, text)]."""

    def __init__(self, stage, result):
        self.stage = stage
        self.ir = result.ir
        self.passes = list(result.passes)
        self.ir_after_all_text = result.ir_after_all
        self.ir_after_all = _split_dumps(result.ir_after_all)

    def __str__(self):
        return self.ir


def compile(model, target="cpu", opt_level=3, stage=None, print_ir_after_all=False,
            parallel=True, fusion=True, bf16_dot_products=False, bf16_amx=None):
    """Compiles `model` (a Model, or the path of a .yaml or .mlir file).

    With `stage` ("layer", "routing", "fused", "linalg", "loops" or "llvm")
    returns a
    Lowered holding the IR there; otherwise a CompiledModel, a shared library
    with the C API of `moec --emit=lib`, ready to run. `print_ir_after_all`
    keeps the IR after every pass (the text of --mlir-print-ir-after-all).
    `fusion=False` skips the moe fusion passes (moec --no-fusion).
    `bf16_dot_products=True` multiplies bf16 expert weights with the AVX-512
    BF16 dot-product instruction (moec --bf16-dot-products); the host must
    have avx512bf16. `bf16_amx` multiplies them on AMX tiles (moec --bf16-amx);
    by default (None) when the host has AMX (amx-tile and amx-bf16) and dot
    products were not asked for. Asking for both is an error.
    Failures raise switchyard.CompileError with the compiler's diagnostics; a
    failing pipeline's message ends with the moe-opt command that reproduces it.
    """
    if target != "cpu":
        raise ValueError(f"unknown target {target!r}: Switchyard compiles for 'cpu' (the "
                         "CUDA target does not exist yet)")
    if not isinstance(opt_level, int) or isinstance(opt_level, bool) or \
            not 0 <= opt_level <= 3:
        raise ValueError(f"opt_level must be an integer from 0 to 3, got {opt_level!r}")
    text, file_name = _source(model)
    if stage is not None:
        result = _switchyard.compile(text, file_name, stage, opt_level, parallel,
                                     fusion, bf16_dot_products, bf16_amx, print_ir_after_all, None,
                                     _RUNTIME)
        return Lowered(stage, result)
    results = []

    def write(library):
        results.append(_switchyard.compile(text, file_name, "llvm", opt_level, parallel,
                                           fusion, bf16_dot_products, bf16_amx,
                                           print_ir_after_all, str(library), _RUNTIME))
    compiled = _load_private("libmodel.so", write)
    compiled._set_ir(list(results[0].passes), results[0].ir_after_all)
    return compiled


def load(path):
    """A CompiledModel from a library written by CompiledModel.save (or by
    `moec --emit=lib`). The library is loaded from a private copy: the
    dynamic loader caches libraries by path, so loading a file that was
    replaced since would otherwise return the old one."""
    path = pathlib.Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no such library: {path}")

    def copy(target):
        shutil.copyfile(path, target)
        if path.with_suffix(".h").is_file():  # for save()
            shutil.copyfile(path.with_suffix(".h"), target.with_suffix(".h"))
    return _load_private(path.name, copy)


def _remove_folder(path, owner):
    # Only by the process that made it: a child of os.fork() that exits
    # runs the parent's finalizers too.
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def _load_private(name, write):
    """Loads the library that `write(path)` writes, in a folder of its own
    that goes with the model (the library stays mapped once loaded)."""
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-"))
    try:
        library = workdir / name
        write(library)
        compiled = CompiledModel(library)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    weakref.finalize(compiled, _remove_folder, str(workdir), os.getpid())
    return compiled


def _unpickle(name, library, header, state):
    def write(target):
        target.write_bytes(library)
        if header is not None:
            target.with_suffix(".h").write_bytes(header)
    compiled = _load_private(name, write)
    compiled._set_ir(state["passes"], state["ir_after_all_text"])
    return compiled


class RunResult:
    """`output` [B, S, D] in the model's dtype, and `stats`: {"blocks": [per
    block: kind, capacity, aux_loss, z_loss, expert_counts, dropped,
    unrouted, usage; None where a block reports none], "aux_loss", "z_loss": sums
    over the blocks that report them, None when none does}."""

    def __init__(self, output, stats):
        self.output = output
        self.stats = stats

    def __repr__(self):
        return f"RunResult(output={self.output.shape} {self.output.dtype}, stats={self.stats})"


class _BlockStats(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_char_p), ("routed", ctypes.c_int),
                ("num_experts", ctypes.c_int64), ("capacity", ctypes.c_int64),
                ("aux_loss", ctypes.c_double), ("z_loss", ctypes.c_double),
                ("dropped", ctypes.c_int64), ("unrouted", ctypes.c_int64),
                ("expert_counts", ctypes.POINTER(ctypes.c_int64)),
                ("usage", ctypes.c_double)]


class _Weights:
    """An sy_model with its weights, and the arrays it borrows."""

    def __init__(self, lib, handle, keep):
        self._lib, self.handle, self._keep = lib, handle, keep

    def __del__(self):
        if self.handle:
            self._lib.sy_model_destroy(self.handle)


class CompiledModel:
    """A compiled model: call it on numpy arrays, save it, inspect it."""

    def __init__(self, library):
        # An absolute path: dlopen searches the library path for a bare name.
        self.library = pathlib.Path(library).resolve()
        if not self.library.exists():
            raise FileNotFoundError(f"no such library: {self.library}")
        self._lib = lib = ctypes.CDLL(str(self.library))
        if not hasattr(lib, "sy_manifest"):
            raise ValueError(f"{str(self.library)!r} is not a Switchyard library (it has no "
                             "sy_manifest)")
        vp, i64, msg = ctypes.c_void_p, ctypes.c_int64, ctypes.POINTER(ctypes.c_void_p)
        for name, res, args in [
            ("sy_manifest", ctypes.c_char_p, []),
            ("sy_free_message", None, [vp]),
            ("sy_model_create_from_file", ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(vp), msg]),
            ("sy_model_create_from_buffers", ctypes.c_int,
             [i64, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(vp), ctypes.POINTER(vp), msg]),
            ("sy_model_create_random", ctypes.c_int, [ctypes.c_uint64, ctypes.POINTER(vp), msg]),
            ("sy_model_save_weights", ctypes.c_int, [vp, ctypes.c_char_p, msg]),
            ("sy_model_destroy", None, [vp]),
            ("sy_model_run", ctypes.c_int, [vp, i64, vp, vp, vp, msg]),
            ("sy_model_useful_flops", ctypes.c_double, [vp, i64, vp]),
            ("sy_stats_create", vp, [vp]),
            ("sy_stats_destroy", None, [vp]),
            ("sy_stats_num_blocks", i64, [vp]),
            ("sy_stats_get", ctypes.c_int, [vp, i64, ctypes.POINTER(_BlockStats), msg]),
        ]:
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        self.manifest = json.loads(lib.sy_manifest().decode())
        self.name = self.manifest["name"]
        self.dtype = self.manifest["dtype"]
        self.seq_len = self.manifest["seq_len"]
        self.d_model = self.manifest["d_model"]
        self.weights = {w["name"]: (tuple(w["shape"]), w["dtype"])
                        for w in self.manifest["weights"]}
        # The weights the runtime packs into copies of its own when bound.
        self._prepacked = {self.manifest["weights"][p["weight"]]["name"]
                           for p in self.manifest.get("prepack", [])}
        self._set_ir([], "")
        self._bound = None  # (key, _Weights, weights, the dict's arrays)

    def _set_ir(self, passes, ir_after_all_text):
        self.passes = passes
        self.ir_after_all_text = ir_after_all_text
        self.ir_after_all = _split_dumps(ir_after_all_text)

    def __reduce__(self):
        # Pickled as its library (and header and IR dumps), so that a model
        # can go to worker processes; bound weights stay behind, and the
        # copy binds its own on its first call.
        header = self.library.with_suffix(".h")
        return (_unpickle, (self.library.name, self.library.read_bytes(),
                            header.read_bytes() if header.is_file() else None,
                            {"passes": self.passes,
                             "ir_after_all_text": self.ir_after_all_text}))

    def __repr__(self):
        return (f"CompiledModel({self.name!r}, dtype={self.dtype!r}, seq_len={self.seq_len}, "
                f"d_model={self.d_model}, library={str(self.library)!r})")

    # -- errors and weights ---------------------------------------------------

    def _check(self, status, message):
        if status == 0:
            return
        text = ctypes.cast(message, ctypes.c_char_p).value.decode() if message else ""
        self._lib.sy_free_message(message)
        raise _STATUS.get(status, RuntimeError)(text)

    def _create(self, weights, seed):
        handle, message = ctypes.c_void_p(), ctypes.c_void_p()
        keep = []
        if weights is None:
            status = self._lib.sy_model_create_random(seed or 0, ctypes.byref(handle),
                                                      ctypes.byref(message))
        elif isinstance(weights, (str, os.PathLike)):
            status = self._lib.sy_model_create_from_file(
                os.fsencode(weights), ctypes.byref(handle), ctypes.byref(message))
        elif isinstance(weights, dict):
            unknown = sorted(set(weights) - set(self.weights))
            if unknown:
                raise ValueError(f"{unknown[0]!r} is not a weight of this model "
                                 f"(it takes {', '.join(self.weights)})")
            names, buffers = [], []
            for name, (shape, dtype) in self.weights.items():
                if name not in weights:
                    raise ValueError(f"weight {name!r} is missing")
                array = np.asarray(weights[name])
                if array.shape != shape:
                    raise ValueError(f"weight {name!r} has shape {list(array.shape)}, "
                                     f"expected {list(shape)}")
                if array.dtype.kind != "f" and array.dtype != _NUMPY["bf16"]:
                    raise ValueError(f"weight {name!r} has dtype {array.dtype}, expected {dtype}")
                # A copy when the array lacks the layout, the dtype or the
                # alignment, and of every weight the runtime reads in place
                # (those it does not pack when bound): the binding is what
                # the arrays held when it was made, whatever happens to
                # them later.
                converted = np.require(array, dtype=_NUMPY[dtype], requirements=["C", "A"])
                if name not in self._prepacked and np.may_share_memory(converted, array):
                    converted = converted.copy()
                array = converted
                keep.append(array)
                names.append(name.encode())
                buffers.append(array.ctypes.data)
            count = len(names)
            status = self._lib.sy_model_create_from_buffers(
                count, (ctypes.c_char_p * count)(*names),
                (ctypes.c_void_p * count)(*buffers), ctypes.byref(handle),
                ctypes.byref(message))
        else:
            raise TypeError("weights must be a safetensors path or a dict of arrays, got "
                            f"{type(weights).__name__}")
        self._check(status, message)
        return _Weights(self._lib, handle, keep)

    def _weights(self, weights, seed):
        if weights is not None and seed is not None:
            raise ValueError("seed draws random weights; pass either weights or seed, "
                             "not both")
        if seed is not None and (not isinstance(seed, (int, np.integer)) or
                                 isinstance(seed, bool) or not 0 <= seed < 2**64):
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        if weights is None:
            key = ("seed", seed)
        elif isinstance(weights, (str, os.PathLike)):
            # The file itself: a relative path after a chdir, or a file
            # rewritten since it was bound (the binding maps it), binds anew.
            path = os.path.realpath(weights)
            try:
                info = os.stat(path)
                key = ("path", path, info.st_dev, info.st_ino, info.st_size,
                       info.st_mtime_ns)
            except OSError:
                key = ("path", path)  # binding it raises the error
        elif isinstance(weights, dict):
            # The dict and the arrays in it: assigning a new array to a key
            # binds anew (arrays changed in place are not seen; docs).
            key = ("dict", id(weights), tuple((name, id(array))
                                              for name, array in weights.items()))
        else:
            key = ("other", id(weights))
        # The binding read once and returned as read: another thread may
        # rebind meanwhile (ctypes releases the GIL, and so does the old
        # binding's destructor), and this call must run with its own.
        bound = self._bound
        if bound is None or bound[0] != key or \
                (key[0] == "dict" and bound[2] is not weights):
            # Holding the dict's arrays too: an id in the key stays theirs.
            held = list(weights.values()) if isinstance(weights, dict) else None
            bound = (key, self._create(weights, seed), weights, held)
            self._bound = bound
        return bound[1]

    # -- running ------------------------------------------------------------

    def __call__(self, x, weights=None, seed=None):
        """Runs the model on `x` [B, S, D] (any B; float32 or the model's
        dtype) with `weights` (a safetensors path or a dict of arrays; None
        draws seeded random weights, `seed`, default 0). Returns a RunResult."""
        bound = self._weights(weights, seed)
        if x is None:
            raise TypeError("x must be an array [B, S, D]")
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[1:] != (self.seq_len, self.d_model) or x.shape[0] < 1:
            raise ValueError(f"x has shape {list(x.shape)}, expected [B, {self.seq_len}, "
                             f"{self.d_model}] with B >= 1")
        if x.dtype.kind != "f" and x.dtype != _NUMPY["bf16"]:
            raise ValueError(f"x has dtype {x.dtype}, expected a floating-point array "
                             f"(converted to the model's {self.dtype})")
        x = np.ascontiguousarray(x, dtype=_NUMPY[self.dtype])  # no copy when it fits
        output = np.empty(x.shape, dtype=_NUMPY[self.dtype])
        stats = self._lib.sy_stats_create(bound.handle)
        try:
            message = ctypes.c_void_p()
            self._check(self._lib.sy_model_run(bound.handle, x.shape[0], x.ctypes.data,
                                               output.ctypes.data, stats,
                                               ctypes.byref(message)), message)
            result = RunResult(output, self._read_stats(stats))
            result.useful_flops = self._lib.sy_model_useful_flops(bound.handle, x.shape[0], stats)
            return result
        finally:
            self._lib.sy_stats_destroy(stats)

    def _read_stats(self, stats):
        blocks = []
        for b in range(self._lib.sy_stats_num_blocks(stats)):
            s, message = _BlockStats(), ctypes.c_void_p()
            self._check(self._lib.sy_stats_get(stats, b, ctypes.byref(s),
                                               ctypes.byref(message)), message)
            counts = (np.ctypeslib.as_array(s.expert_counts, (s.num_experts,)).copy()
                      if s.expert_counts else None)
            blocks.append({
                "kind": s.kind.decode(),
                "capacity": None if s.capacity < 0 else s.capacity,
                "aux_loss": s.aux_loss if s.routed and s.kind == b"moe" else None,
                "z_loss": s.z_loss if s.routed else None,
                "expert_counts": counts,
                "dropped": None if s.dropped < 0 else s.dropped,
                "unrouted": None if s.unrouted < 0 else s.unrouted,
                "usage": None if math.isnan(s.usage) else s.usage,
            })
        # A sum over the blocks that report the loss; None when none does.
        total = {}
        for key in ("aux_loss", "z_loss"):
            reported = [b[key] for b in blocks if b[key] is not None]
            total[key] = sum(reported) if reported else None
        return {"blocks": blocks, **total}

    def save_weights(self, path, weights=None, seed=None):
        """Writes the weights a call would use as a safetensors file."""
        message = ctypes.c_void_p()
        self._check(self._lib.sy_model_save_weights(self._weights(weights, seed).handle,
                                                    os.fsencode(path), ctypes.byref(message)),
                    message)

    def save(self, path):
        """Writes the shared library (the C API of `moec --emit=lib`) to
        `path`, and its header beside it; switchyard.load(path) loads it."""
        path = pathlib.Path(path)
        if path.with_suffix(".h") == path:
            raise ValueError(f"the library {str(path)!r} would be overwritten by its header "
                             "(the same name with .h): name it libNAME.so")
        # Through a temporary file and a rename: a process that has the old
        # file loaded keeps its mapping instead of crashing on a rewrite.
        if not self.library.is_file():
            raise FileNotFoundError(f"the library {str(self.library)!r} is gone (removed "
                                    "since it was loaded): nothing to save")
        for source, target in ((self.library, path),
                               (self.library.with_suffix(".h"), path.with_suffix(".h"))):
            if not source.exists():
                continue  # a library loaded without its header
            temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            try:
                shutil.copyfile(source, temporary)
                os.replace(temporary, target)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
        return path
