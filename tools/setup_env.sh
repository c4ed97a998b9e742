#!/usr/bin/env bash
# Build (or verify) the project's virtual environment in .venv with the exact, tested set of
# versions in requirements/constraints.txt. Idempotent: when the stamp matches the inputs and
# the key imports work, it returns in a few seconds.
#
#   bash tools/setup_env.sh            # create / update .venv
#   VENV=/some/where bash tools/setup_env.sh
#
# Why the steps look like this (see docs in README "Environment"):
# * torch is installed first and pinned: an unpinned resolver pulls a multi-GB CUDA build.
# * OpenMMLab packages go in with --no-deps: their metadata drags in opencv-python (GUI) next
#   to the headless build and old pins of setuptools / requests / rich.
# * mmcv 2.1.0 has no CPU wheel for this torch: it is built from the sdist with CPU ops
#   (-g0 halves build time and size). pip's wheel cache makes later rebuilds fast.
# * setuptools 79: < 81 keeps pkg_resources (mmengine, mim); < 80 keeps a real
#   `setup.py develop`, which the editable install below relies on.
# * torchvision exists only as a CUDA-built wheel for torch 2.13; installed with --no-deps,
#   its C ops cannot load on CPU torch; mmvitscale/compat.py works around that at import.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
C="$ROOT/requirements/constraints.txt"
STAMP="$VENV/.mmvitscale-env-stamp"
log() { printf '[setup_env] %s\n' "$*" >&2; }

inputs_hash() {
  cat "$C" "$ROOT/requirements/runtime.txt" "$ROOT/setup.cfg" "$ROOT/setup.py" \
      "$ROOT/tools/setup_env.sh" | sha256sum | cut -d' ' -f1
}

fashion_mnist() {
  local dir=/usr/share/datasets/fashion-mnist
  if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then return 0; fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing Debian package dataset-fashion-mnist"
    (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }) ||
      log "WARNING: could not install dataset-fashion-mnist; offline data tools will ask for it"
  else
    log "NOTE: Fashion-MNIST not found at $dir. Install it with" \
        "'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu) or point" \
        "MMVITSCALE_FASHION_MNIST at a folder holding the four idx .gz files."
  fi
}

healthy() {
  [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(inputs_hash)" ] &&
    "$PY" -c "import mmvitscale, mmcv.ops, mmdet, mmpretrain, mmaction, timm" >/dev/null 2>&1
}

fashion_mnist
if healthy; then
  log "environment at $VENV is up to date"
  exit 0
fi

start=$(date +%s)
[ -x "$PY" ] || { log "creating $VENV"; python3 -m venv "$VENV"; }
# pip install pinned by the constraints; drops this machine's noise about missing mirror dirs
pipc() {
  "$PY" -m pip install -q --disable-pip-version-check -c "$C" "$@" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}
pipc setuptools wheel ninja
pipc torch numpy
pipc --no-deps torchvision
pipc -r "$ROOT/requirements/runtime.txt"
if ! "$PY" -c "import mmcv, mmcv.ops" >/dev/null 2>&1; then
  log "building mmcv with CPU ops (about 5 minutes the first time on 2 cores)"
  CFLAGS=-g0 MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
    pipc --no-build-isolation --no-deps mmcv
fi
pipc --no-deps mmengine mmpretrain mmdet mmaction2 openmim timm
log "installing mmvitscale (editable)"
# Legacy develop mode (an egg-link to this checkout): `mim list` and mim's `.mim` lookups
# find the package only there; a PEP 660 editable wheel hides the source folder from them.
pipc --no-deps --no-build-isolation --no-use-pep517 -e "$ROOT"
"$PY" -c "import mmvitscale, mmcv.ops, mmdet, mmpretrain, mmaction, timm"
inputs_hash > "$STAMP"
log "environment ready in $(( $(date +%s) - start )) s"
