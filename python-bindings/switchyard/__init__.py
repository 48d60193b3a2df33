"""Switchyard from Python: build, compile, inspect and run Mixture-of-Experts
models with the Switchyard compiler.

    import switchyard as sy
    model = sy.Model.from_yaml("examples/switch-base-8.yaml")
    compiled = sy.compile(model)                      # the same pipeline as moec
    result = compiled(x, weights="w.safetensors")     # x: numpy [B, S, D]
    result.output, result.stats

See docs/Python.md for the guide.
"""

import os as _os
import pathlib as _pathlib

_RUNTIME = _pathlib.Path(__file__).resolve().parent / "runtime"
if _RUNTIME.is_dir():
    # The runtime archives compiled models are linked with ship in the package.
    _os.environ.setdefault("SWITCHYARD_RUNTIME_DIR", str(_RUNTIME))

from ._switchyard import CompileError, ModelError  # noqa: E402
from ._model import Model  # noqa: E402
from ._compiled import CompiledModel, Lowered, RunResult, compile, load  # noqa: E402

STAGES = ("layer", "routing", "linalg", "loops", "llvm")

__all__ = ["Model", "compile", "load", "CompiledModel", "Lowered", "RunResult",
           "ModelError", "CompileError", "STAGES"]
