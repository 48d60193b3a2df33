"""Switchyard from Python: build, compile, inspect and run Mixture-of-Experts
models with the Switchyard compiler.

    import switchyard as sy
    model = sy.Model.from_yaml("examples/switch-base-8.yaml")
    compiled = sy.compile(model)                      # the same pipeline as moec
    result = compiled(x, weights="w.safetensors")     # x: numpy [B, S, D]
    result.output, result.stats

See docs/Python.md for the guide.
"""

from ._switchyard import CompileError, ModelError
from ._model import Model
from ._compiled import CompiledModel, Lowered, RunResult, compile, load

STAGES = ("layer", "routing", "fused", "linalg", "loops", "llvm")

try:
    from importlib.metadata import version as _version
    __version__ = _version("switchyard")
except Exception:  # not installed as a distribution (a source checkout)
    __version__ = "unknown"

__all__ = ["Model", "compile", "load", "CompiledModel", "Lowered", "RunResult",
           "ModelError", "CompileError", "STAGES"]
