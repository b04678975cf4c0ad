#!/usr/bin/env bash
# The real-scale checks of issue 10 on one CUDA GPU, in about 8 minutes on an H200:
#   1. the `gpu` tests (real-size 2B LoRA + QLoRA through the training path, peak memory vs estimate);
#   2. the training benchmark for Qwen3-VL-2B and 8B (published configs, random weights), LoRA and QLoRA,
#      a few steps each: samples/s, tokens/s, peak GB vs estimate, MFU; then local inference throughput
#      of the 2B model, one image per request (batched generation is not implemented yet).
# Results: one JSON line per measurement in $OUT/gpu_check.jsonl (or benchmarks/results/), copied into the
# "Real scale" tables of docs/training.md and docs/benchmarks.md by hand.
#
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_check.jsonl"
: > "$LOG"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

"$PY" - <<'PY' || { echo "no CUDA GPU: nothing to check here" >&2; exit 2; }
import torch, sys
sys.exit(0 if torch.cuda.is_available() else 1)
PY
"$PY" -c "import bitsandbytes" 2>/dev/null || "$PY" -m pip install -q bitsandbytes \
  || echo "bitsandbytes unavailable: QLoRA rows will report the error" >&2
"$PY" -c "import torch, json; p = torch.cuda.get_device_properties(0); print(json.dumps({'gpu': p.name, \
'memory_gb': round(p.total_memory / 1e9, 1), 'capability': list(torch.cuda.get_device_capability()), \
'torch': torch.__version__}))" | tee -a "$LOG"

echo "== 1/2 gpu tests" >&2
timeout 200 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/ -rA --junitxml="$RESULTS/gpu_tests.xml" \
  2>&1 | tail -15 >&2
echo "{\"gpu_tests_exit\": ${PIPESTATUS[0]}}" | tee -a "$LOG"

echo "== 2/2 training benchmark 2B and 8B (LoRA, QLoRA) + 2B local inference, one image at a time" >&2
timeout 320 "$PY" -m napari_fracto.training.bench --sizes 2B 8B --methods lora qlora --steps 5 \
  --inference 2B 2>"$RESULTS/bench.stderr" | tee -a "$LOG"
echo "results in $LOG" >&2
