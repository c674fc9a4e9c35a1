#!/usr/bin/env bash
# Issue 8's GPU check, prepared to run once through the device tool (one H100/H200, ~10 min):
#   1. the CUDA-only test that the trainer makes no host sync between log points;
#   2. the benchmark with the reference shapes (bf16, 128 x 512 = 65,536 tokens per step),
#      largest configs first so that a timeout still leaves the rows the targets are about;
#   3. the real-data check (trainer on SAMSum / textbooks vs fixed shapes) at the large configs.
# Rows stream to $OUT/bench-*.jsonl as they finish; results/bench/gpu-<first>.json and gpu.json
# (with provenance) are copied to $OUT: commit them from there.
#
# Before the device call, on the CPU machine, from the repository root (both folders are ignored,
# never committed: the corpora's licences forbid copying them into the project):
#   printf '/.whl/\n/.devdata/\n' >> .git/info/exclude
#   cp -r ../shared/data .devdata
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl datasets==5.2.0 dill multiprocess xxhash
# Then: run(command="bash scripts/device_check.sh", carry=[".whl", ".devdata"], timeout_s=590).
# Dry run on a CPU (plumbing only, results kept out of the repo):
#   DEVICE=cpu CONFIGS="smoke smoke" REFTX_RESULTS_DIR=/tmp/results OUT=/tmp/out bash scripts/device_check.sh
set -uo pipefail
DEVICE=${DEVICE:-cuda}
CONFIGS=${CONFIGS:-large medium small tiny}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1
[ -d .devdata ] && export REFTX_DATA_DIR="$PWD/.devdata"
python3 -c "import torch; print('torch', torch.__version__, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
date -u +"date %Y-%m-%dT%H:%M:%SZ"; git rev-parse --short HEAD 2>/dev/null || true

python3 -m pytest -q -p no:cacheprovider tests/test_trainer.py -k "host_sync or compiled" 2>&1 | tail -3
first=${CONFIGS%% *}
python3 -m tools --device "$DEVICE" --configs "$first" --generation --real-data --json \
  --save "gpu-$first" | tee "$OUT/bench-$first.jsonl"
rest=${CONFIGS#"$first"}
if [ -n "${rest// /}" ]; then
  # shellcheck disable=SC2086
  python3 -m tools --device "$DEVICE" --configs $rest --generation --json --save gpu \
    | tee "$OUT/bench-rest.jsonl"
fi
cp "${REFTX_RESULTS_DIR:-results}"/bench/gpu*.json "$OUT"/ 2>/dev/null || true
