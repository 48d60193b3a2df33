#!/usr/bin/env bash
# Installs what Switchyard needs on a fresh Debian 12 machine, and nothing
# that is already there: LLVM/MLIR 22 and clang-22 from Debian's archive,
# Ninja, CMake and ccache, and the Python packages of the test suite.
set -euo pipefail

APT_PACKAGES=(llvm-22-dev libmlir-22-dev mlir-22-tools clang-22 libomp-22-dev
              libclang-rt-22-dev cmake ninja-build ccache)
# module:package pairs (the import name and the name on PyPI).
PY_PACKAGES=(numpy:numpy pytest:pytest xdist:pytest-xdist ml_dtypes:ml_dtypes
             nanobind:nanobind yaml:pyyaml scikit_build_core:scikit-build-core)

# `--bench`: also what bench/ compares against (PyTorch eager from Debian,
# with OpenBLAS as the system BLAS instead of the reference one).
if [[ "${1:-}" == "--bench" ]]; then
  APT_PACKAGES+=(python3-torch libopenblas0-pthread)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
py_missing=()
for pair in "${PY_PACKAGES[@]}"; do
  "$PYTHON" -c "import ${pair%%:*}" 2>/dev/null || py_missing+=("${pair#*:}")
done
if ((${#py_missing[@]})); then
  echo "install-deps: pip installing ${py_missing[*]}"
  "$PYTHON" -m pip install -q "${py_missing[@]}"
fi
