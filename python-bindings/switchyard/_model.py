"""switchyard.Model: a validated model description."""

import json
import os
import pathlib

from . import _switchyard


def _scalar(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        # As a plain number: numpy 2 writes its scalars as np.float64(1.5).
        return repr(float(value) if isinstance(value, float) else int(value))
    # JSON strings are YAML double-quoted scalars.
    return json.dumps(str(value))


def _to_yaml(top, blocks):
    lines = [f"{key}: {_scalar(value)}" for key, value in top.items()]
    lines.append("blocks:" if blocks else "blocks: []")
    for block in blocks:
        if not isinstance(block, dict):
            raise TypeError(f"each block must be a dict of options, got {type(block).__name__}")
        items = list(block.items()) or [("layer", None)]
        for i, (key, value) in enumerate(items):
            lines.append(f"{'  - ' if i == 0 else '    '}{key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"


class Model:
    """A model description, checked exactly as moec checks YAML files.

    Either from keywords mirroring the YAML keys,

        Model(d_model=768, seq_len=512, dtype="f32",
              blocks=[dict(layer="moe", experts=8, d_ff=3072, norm="rms")])

    or with Model.from_yaml(text_or_path). Problems raise switchyard.ModelError
    with moec's message (file:line:col, the line and a caret).
    """

    def __init__(self, d_model, seq_len, blocks, dtype="f32", name="model", **extra):
        top = {"name": name, "d_model": d_model, "seq_len": seq_len, "dtype": dtype, **extra}
        if isinstance(blocks, (dict, str, bytes)) or not hasattr(blocks, "__iter__"):
            raise TypeError("blocks must be a list of dicts of options, got "
                            f"{type(blocks).__name__}")
        self._init(_to_yaml(top, list(blocks)), f"{name}.yaml")

    @classmethod
    def from_yaml(cls, text_or_path):
        """From YAML text (str or UTF-8 bytes), or from the path of a
        .yaml/.yml file."""
        model = cls.__new__(cls)
        path = None
        if isinstance(text_or_path, bytes):
            text_or_path = text_or_path.decode()
        if not isinstance(text_or_path, (str, os.PathLike)):
            raise TypeError("from_yaml() takes YAML text or the path of a .yaml file, got "
                            f"{type(text_or_path).__name__}")
        if isinstance(text_or_path, os.PathLike):
            path = pathlib.Path(text_or_path)
        elif isinstance(text_or_path, str) and "\n" not in text_or_path and \
                text_or_path.endswith((".yaml", ".yml")):
            path = pathlib.Path(text_or_path)
        if path is not None:
            model._init(path.read_text(), str(path))
        else:
            model._init(str(text_or_path), "<string>.yaml")
        return model

    def _init(self, text, file_name):
        self.yaml = text
        self.file_name = file_name
        self.description = _switchyard.parse_model(text, file_name)

    name = property(lambda self: self.description["name"])
    d_model = property(lambda self: self.description["d_model"])
    seq_len = property(lambda self: self.description["seq_len"])
    dtype = property(lambda self: self.description["dtype"])
    blocks = property(lambda self: self.description["blocks"])

    def __repr__(self):
        kinds = ", ".join(b["layer"] for b in self.blocks)
        return (f"Model({self.name!r}, d_model={self.d_model}, seq_len={self.seq_len}, "
                f"dtype={self.dtype!r}, blocks=[{kinds}])")
