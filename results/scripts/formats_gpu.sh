#!/bin/bash
# Issue 17, the 4-bit format zoo on one H200. Expected ~4.5 device minutes, never more than ~5: the comparison stops
# every training at DEADLINE_S=260 s after its start (then collects and tars, a few seconds). Estimate: the two
# teachers ~1 min (compile + 750 steps each), then all 20 students at once on the one GPU: ~1 min of compiles (16
# CPU cores) + ~2 min of shared-GPU training, from the H100 run of results/glue_sst2_minilm.md (4 concurrent KD
# students: ~74 steps/s of batch 64 in total). If the GPU is slower than that, the runs still going at the deadline
# report their evaluations so far (every 100 steps) and are marked partial in the table. Re-running with the same
# WORK resumes: finished runs are skipped, stopped ones run again in their run directories.
# Setting: all-MiniLM-L6-v2 on SST-2 (first 8,000 training sentences, full 872-sentence dev, max length 64) and
# MRPC (full 3,668 / 408, max length 128): one FP32 teacher per task (750 steps x 32, lr 5e-5), then INT4 sym,
# INT4 asym, MXFP4, NVFP4 (all W4A4) and ternary W + INT8 A students, QAT+KD (Logit + Att* + Rep, clip [-5, 5]) from
# that teacher, 300 steps x 64 at lr 1e-4 each, seeds 0 and 1 (SEEDS=0 halves the student work).
#
#   MINILM=<all-MiniLM-L6-v2 dir> DATA=<dir with glue/SST-2, glue/MRPC> OUT=<out dir> PYTHONPATH=. \
#       bash results/scripts/formats_gpu.sh [git sha]
#   SMOKE=1 ... : CPU proof of the same path, 6 steps per run, 2 trainings at a time (use a tiny HF BERT as MINILM).
#
# Writes 2 files into $OUT: formats_runs.json (every run's record; input of the writer below) and
# formats_logs.tar.gz (logs, config.json, command.txt, metrics.jsonl, summary.json of every run; no checkpoints).
# Then, on a machine with matplotlib:
#   python -m experiments.formats --from_runs=formats_runs.json --results=results/formats
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=${PYTHONPATH:-.}
: "${MINILM:?set MINILM to the all-MiniLM-L6-v2 directory}" "${DATA:?set DATA}" "${OUT:?set OUT}"
SHA=${1:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
W=${WORK:-/tmp/formats_runs}
if [ "${SMOKE:-0}" = 1 ]; then
  SIZE="--max_train_examples=64 --teacher_steps=6 --num_train_steps=6 --batch_size=16 --seeds=0 --jobs=2"
  DEADLINE=${DEADLINE_S:-3600}
else
  SIZE="--max_train_examples=8000 --teacher_steps=750 --num_train_steps=300 --batch_size=64 \
        --seeds=${SEEDS:-0,1} --jobs=${JOBS:-20}"
  DEADLINE=${DEADLINE_S:-260}
fi
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
mkdir -p "$OUT" "$W"
T0=$(date +%s)
timeout $((DEADLINE + 60)) python3 -m experiments.formats --tasks=sst2,mrpc --model="$MINILM" --glue_dir="$DATA/glue" \
    $SIZE --deadline_s="$DEADLINE" --workdir="$W" --results= --runs_json="$OUT/formats_runs.json" \
    --git_commit="$SHA" --gpu="${GPU:-cpu}" > "$W/formats.log" 2>&1
echo "experiments.formats rc=$? wall=$(( $(date +%s) - T0 )) s" | tee -a "$W/formats.log"
cd "$W" && tar czf "$OUT/formats_logs.tar.gz" formats.log logs \
    $(find . -mindepth 2 -maxdepth 2 \( -name config.json -o -name command.txt -o -name metrics.jsonl \
      -o -name summary.json \) | sort)
tail -n 25 "$W/formats.log"
