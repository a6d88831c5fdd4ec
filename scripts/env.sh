# Sourced by the other scripts: makes sure the pinned libtorch (PyTorch 2.13.0, the version tch 0.26
# builds against) is installed and exports what cargo and torch-sys need to find it.
#
# Caches live outside the clone so a second run, or a second clone, is fast:
#   GIBBON_CACHE   (default ~/.cache/gibbon): venv/ holds torch, target/ the cargo build.
# Set GIBBON_TORCH_SPEC to install another build (e.g. a CUDA wheel) into the same venv.
set -euo pipefail
GIBBON_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GIBBON_CACHE="${GIBBON_CACHE:-$HOME/.cache/gibbon}"
GIBBON_VENV="$GIBBON_CACHE/venv"
GIBBON_TORCH_SPEC="${GIBBON_TORCH_SPEC:-torch==2.13.0}"
mkdir -p "$GIBBON_CACHE"

if ! command -v cargo >/dev/null 2>&1; then
  echo "gibbon setup: cargo is not on PATH; install the Rust toolchain (rustup) first" >&2
  exit 1
fi

if ! "$GIBBON_VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '2.13.0' else 1)" >/dev/null 2>&1; then
  echo "gibbon setup: installing $GIBBON_TORCH_SPEC into $GIBBON_VENV (once; a few minutes)" >&2
  python3 -m venv "$GIBBON_VENV"
  "$GIBBON_VENV/bin/pip" install --quiet --disable-pip-version-check "$GIBBON_TORCH_SPEC"
fi

export VIRTUAL_ENV="$GIBBON_VENV"
export PATH="$GIBBON_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
# One cargo target shared by every clone on this machine; ./target points to it so that
# target/release/gibbon works as documented.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$GIBBON_CACHE/target}"
mkdir -p "$CARGO_TARGET_DIR"
if [ ! -e "$GIBBON_ROOT/target" ]; then
  ln -s "$CARGO_TARGET_DIR" "$GIBBON_ROOT/target"
fi
