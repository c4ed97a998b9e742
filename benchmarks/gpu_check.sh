#!/usr/bin/env bash
# One GPU check of the cost and search paths (<= 10 min on one GPU), written as JSON.
#
#   bash benchmarks/gpu_check.sh                      # on a GPU: work_dirs/gpu_check.json
#   DRY=1 bash benchmarks/gpu_check.sh                # CPU dry run, tiny sizes, seconds
#   bash benchmarks/gpu_check.sh --out x.json --budget-s 300 --sections latency proxies
#   FETCH_WHEELS=1 bash benchmarks/gpu_check.sh       # here: put mmengine's wheels in .whl/
#
# The logic is benchmarks/gpu_check.py (which imports the mmvitscale package only); this
# wrapper picks the interpreter (.venv/bin/python, else $PYTHON, else python3), installs the
# wheels carried in .whl/ when mmengine is missing (a bare GPU image), writes to $OUT/ when the
# device tool sets OUT, and stops the run after 600 s whatever happens. See docs/guides/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ "${FETCH_WHEELS:-0}" = 1 ]; then
  # pure-Python wheels mmvitscale needs beyond a PyTorch image (Python 3.12 there)
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
    mmengine==0.10.7 addict termcolor yapf platformdirs
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  exit 0
fi
if ! "$PY" -c 'import mmengine' >/dev/null 2>&1; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/mmvitscale_site .whl/*.whl
    export PYTHONPATH=/tmp/mmvitscale_site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "gpu_check.sh: mmengine is missing and no .whl/ to install it from" \
         "(FETCH_WHEELS=1 bash benchmarks/gpu_check.sh fetches them)" >&2
    exit 2
  fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
ARGS=()
if [ -n "${OUT:-}" ]; then ARGS+=(--out "$OUT/gpu_check.json"); fi
if [ "${DRY:-0}" != 0 ]; then ARGS+=(--dry); fi
exec timeout 600 "$PY" benchmarks/gpu_check.py "${ARGS[@]}" "$@"
