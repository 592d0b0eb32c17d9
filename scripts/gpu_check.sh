#!/usr/bin/env bash
# The prepared GPU check (docs/gpu_check.md): every table row's training step and the predict path's fps,
# written as gpu_check.json and gpu_check.md into $OUT (or the folder given), the device named.
#
#   scripts/gpu_check.sh [--cpu-smoke] [OUT_DIR]
#
# On a machine that has torch (with CUDA) but not our other dependencies and no network, `make gpu-wheels`
# (run beforehand, where there is a network) leaves them in .gpu-wheels/; they are installed into a
# temporary folder, never into the machine's Python. Elsewhere (a GPU box with `make install` done, or CI
# with --cpu-smoke) the script uses the Python it finds. The package runs from this checkout either way.
set -euo pipefail

smoke=()
out="${OUT:-gpu_check}"
for arg in "$@"; do
  case "$arg" in
    --cpu-smoke) smoke=(--cpu-smoke) ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) out="$arg" ;;
  esac
done

repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python="$(command -v python3)"; fi
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The package as its wheel lays it out (conf/ installs as bisenet_pl/conf), without building one.
mkdir -p "$work/src"
cp -r "$repo/bisenet_pl" "$work/src/bisenet_pl"
rm -rf "$work/src/bisenet_pl/conf"
cp -r "$repo/conf" "$work/src/bisenet_pl/conf"
pythonpath="$work/src"

if [ -d "$repo/.gpu-wheels" ] && ! "$python" -c "import hydra, albumentations" 2>/dev/null; then
  echo "[gpu_check] installing $(ls "$repo/.gpu-wheels" | wc -l) wheels from .gpu-wheels into a temporary folder"
  "$python" -m pip install --quiet --no-index --no-deps --target "$work/site" "$repo"/.gpu-wheels/*.whl
  pythonpath="$pythonpath:$work/site"
fi

mkdir -p "$out"
out="$(cd "$out" && pwd)"
# Run from the temporary folder: from the checkout, `python -m` would put its bisenet_pl/ (which has no
# conf/ inside: that mapping is the installer's) ahead of the laid-out copy.
cd "$work"
echo "[gpu_check] $("$python" -c 'import torch; print("torch", torch.__version__, "| cuda:", torch.cuda.is_available())')"
PYTHONPATH="$pythonpath${PYTHONPATH:+:$PYTHONPATH}" NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=disabled \
  "$python" "$repo/benchmarks/gpu_check.py" --out "$out" "${smoke[@]}"
