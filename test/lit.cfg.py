# -*- Python -*-
# lit configuration of the Switchyard test suite.

import os

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "SWITCHYARD"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.switchyard_obj_root, "test")
config.excludes = ["CMakeLists.txt", "README.md", "lit.cfg.py",
                   "lit.site.cfg.py", "reference", "Inputs", "corpus"]

config.substitutions.append(("%PATH%", config.environment["PATH"]))
config.substitutions.append(("%shlibext", config.llvm_shlib_ext))
config.substitutions.append(("%switchyard_src_root", config.switchyard_src_root))
config.substitutions.append(("%switchyard_obj_root", config.switchyard_obj_root))

# Every FileCheck variable is local to its CHECK-LABEL block.
config.environment["FILECHECK_OPTS"] = "-enable-var-scope"

llvm_config.with_system_environment(["HOME", "INCLUDE", "LIB", "TMP", "TEMP"])
llvm_config.use_default_substitutions()
# FileCheck, not, count and split-file come from Debian's LLVM.
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)

tool_dirs = [config.switchyard_tools_dir, config.llvm_tools_dir]
tools = ["moe-opt", "moec", "moe-fuzz-yaml", "moe-fuzz-safetensors", "moe-fuzz-npy"]
llvm_config.add_tool_substitutions(tools, tool_dirs)
