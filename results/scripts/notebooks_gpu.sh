#!/bin/bash
# Runs notebooks/03_int4_inference.py as a plain script on one GPU: its integer-vs-fake-quant check on real MiniLM
# weights with the compiled kernels, and its GPU timing cell (W4A4 vs bf16, BERT-large FFN-in), which CI's CPU
# run skips. Not a results table: a check that the notebook's GPU branch runs unchanged. Expected: ~2 GPU minutes.
#   PYTHONPATH=. DATA=carry/data OUT=<dir> bash results/scripts/notebooks_gpu.sh
# Needs $DATA/minilm: an all-MiniLM-L6-v2 checkpoint directory (the fp16 copy carried for the GLUE run,
# .carry_glue/minilm, is fine). Writes $OUT/notebook03_gpu.log. SMOKE=1 runs the same on a CPU (timing skipped).
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2 MPLBACKEND=Agg
export INT4JAX_MINILM="$DATA/minilm"
LOG="$OUT/notebook03_gpu.log"
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi (SMOKE=${SMOKE:-0})"
  git rev-parse HEAD 2>/dev/null || true; } > "$LOG"
T0=$(date +%s)
timeout 300 python3 notebooks/03_int4_inference.py >> "$LOG" 2>&1
echo "rc=$? wall=$(( $(date +%s) - T0 ))s" >> "$LOG"
tail -5 "$LOG"
