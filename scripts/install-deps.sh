#!/usr/bin/env bash
# Installs what Switchyard needs on a fresh Debian 12 machine, and nothing
# that is already there: LLVM/MLIR 22 and clang-22 from Debian's archive,
# Ninja, CMake and ccache, and the Python packages of the test suite.
set -euo pipefail

APT_PACKAGES=(llvm-22-dev libmlir-22-dev mlir-22-tools clang-22 libomp-22-dev
              cmake ninja-build ccache)
PY_PACKAGES=(numpy pytest ml_dtypes nanobind)

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
for mod in "${PY_PACKAGES[@]}"; do
  "$PYTHON" -c "import $mod" 2>/dev/null || py_missing+=("$mod")
done
if ((${#py_missing[@]})); then
  echo "install-deps: pip installing ${py_missing[*]}"
  "$PYTHON" -m pip install -q "${py_missing[@]}"
fi
