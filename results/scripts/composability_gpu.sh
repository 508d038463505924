#!/bin/bash
# Issue 14: W4A4 composed with N:M sparsity and with layer reduction, all-MiniLM-L6-v2 on SST-2 and MRPC.
#
#   MINILM=<HF dir of all-MiniLM-L6-v2, fp32/fp16 safetensors> DATA=<dir with glue/SST-2, glue/MRPC> OUT=<dir> \
#     bash results/scripts/composability_gpu.sh <git sha>
#   SMOKE=1 OUT=/tmp/comp_out bash results/scripts/composability_gpu.sh      # CPU proof: tiny random BERT, 2 steps
#
# Per task: one FP32 teacher, then 7 students distilled from that same teacher (Logit + Att* + Rep, W4A4 sym,
# clip [-5, 5], lr 1e-4, batch 64): w4a4 | 2:4 static P=>Q | 2:4 static Q=>P | 2:4 movement P=>Q | 2:4 movement
# Q=>P | 1:4 (75%) static P=>Q | 3-layer student (teacher layers 1, 3, 5). Budgets (reduced, stated in the results):
#   SST-2: teacher 2000 steps x 32 (0.95 epoch, full train set); students 600 steps x 64 on the first 32,000
#          sentences (1.2 epochs of that subset); max length 64; movement masks recomputed every 50 steps.
#   MRPC:  teacher 3 epochs x 32; students 3 epochs x 64 (171 steps); max length 128; masks every 20 steps.
# Seeds: SST2_SEEDS (default "42"), MRPC_SEEDS (default "42 43 44"; all variants of a seed before the next seed).
# The two task pipelines run concurrently on the one GPU, each with its students in parallel (MAX_PAR per task).
# Expected: ~5 GPU minutes on one H200. Hard cap: every process is killed at DEADLINE_S (default 340 s) after the
# start (and teachers at 150 s, SST-2 students at 210 s, MRPC students at 120 s); runs not started by then are
# skipped, and a killed run keeps the evaluations it logged (the results mark it). Total <= 6 min incl. collection.
# Outputs (2 files): $OUT/composability_runs.json (every run's config, eval curve, summary; gpu/versions; walls)
# and $OUT/composability_logs.tar.gz. Then: python results/scripts/collect_composability.py <runs.json>
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=.
PY=${PYTHON:-python3}
SHA=${1:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
R=${RUNS:-/tmp/composability_runs}; L=$R/logs
# KEEP_RUNS=1 keeps $R and reuses teachers that finished there (a re-run after a cut; the CPU smoke).
[ "${KEEP_RUNS:-0}" = 1 ] || rm -rf "$R"; mkdir -p "$L" "$OUT"; rm -f "$R/walls.txt"
SST2_SEEDS=${SST2_SEEDS:-42}; MRPC_SEEDS=${MRPC_SEEDS:-42 43 44}; MAX_PAR=${MAX_PAR:-7}
DEADLINE_S=${DEADLINE_S:-340}; T_TEACHER=${T_TEACHER:-150}; T_SST2=${T_SST2:-210}; T_MRPC=${T_MRPC:-120}
SST2_T="--num_train_steps=2000 --eval_every_steps=500"
SST2_S="--num_train_steps=600 --max_train_examples=32000 --eval_every_steps=100 --mask_update_every=50"
MRPC_T="--num_epochs=3 --eval_every_steps=50"
MRPC_S="--num_epochs=3 --eval_every_steps=43 --mask_update_every=20"
LAYERS=3
if [ "${SMOKE:-0}" = 1 ]; then
  # A 4-layer random BERT with the real WordPiece vocabulary, 64 examples, 2-4 steps: proves the plumbing only.
  MINILM=$R/tiny_bert; DATA=${DATA:-../shared/data}; LAYERS=2; SST2_SEEDS=42; MRPC_SEEDS=${MRPC_SEEDS:-42}
  MAX_PAR=7
  T_TEACHER=900; T_SST2=900; T_MRPC=900; DEADLINE_S=3600   # a shared 2-core CPU compiles slowly
  [ -f "$MINILM/config.json" ] || $PY - "$MINILM" "$DATA" <<'EOF'
import shutil, sys, transformers
from int4jax.tokenizers import shared_tokenizer_dir
cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=128)
transformers.BertModel(cfg).save_pretrained(sys.argv[1])
shutil.copy(shared_tokenizer_dir("bert-base-uncased") / "vocab.txt", sys.argv[1])
EOF
  SMALL="--max_train_examples=64 --eval_batch_size=64 --log_every_steps=1"
  SST2_T="--num_train_steps=4 --eval_every_steps=4 $SMALL"; MRPC_T="$SST2_T"
  SST2_S="--num_train_steps=4 --eval_every_steps=2 --mask_update_every=2 $SMALL"; MRPC_S="$SST2_S"
fi
: "${MINILM:?set MINILM to the all-MiniLM-L6-v2 HF directory}" "${DATA:?set DATA (holds glue/SST-2, glue/MRPC)}"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import jax, flax, optax, orbax.checkpoint as o; print(jax.__version__, flax.__version__, optax.__version__, o.__version__, jax.devices())"
} > "$R/gpu.txt" 2>&1
T0=$(date +%s)

VARIANTS=(
  "w4a4|"
  "s24_static_pq|--sparsity=2:4 --prune=static --order=pq"
  "s24_static_qp|--sparsity=2:4 --prune=static --order=qp"
  "s24_movement_pq|--sparsity=2:4 --prune=movement --order=pq"
  "s24_movement_qp|--sparsity=2:4 --prune=movement --order=qp"
  "s14_static_pq|--sparsity=1:4 --prune=static --order=pq"
  "layers${LAYERS}|--num_layers=${LAYERS}"
)

run() {  # run <timeout> <name> <args...>: one experiments.glue process, its wall and rc into walls.txt
  local t=$1 name=$2; shift 2
  local t1=$(date +%s)
  local left=$(( DEADLINE_S - (t1 - T0) ))
  if [ "$left" -lt 20 ]; then echo "$name skipped (deadline) start=$(( t1 - T0 ))s" >> "$R/walls.txt"; return; fi
  [ "$t" -gt "$left" ] && t=$left
  timeout "$t" $PY -m experiments.glue --model="$MINILM" --git_commit="$SHA" --log_every_steps=100 "$@" \
      --workdir="$R/$name" > "$L/$name.log" 2>&1
  echo "$name rc=$? wall=$(( $(date +%s) - t1 ))s start=$(( t1 - T0 ))s" >> "$R/walls.txt"
}

pipeline() {  # pipeline <task> <data subdir> <teacher flags> <student flags> <student timeout> <seeds>
  local task=$1 sub=$2 tflags=$3 sflags=$4 ts=$5 seeds=$6
  local common="--task=$task --data_dir=$DATA/glue/$sub"
  if [ "${KEEP_RUNS:-0}" = 1 ] && [ -d "$R/${task}_fp32/checkpoints/best" ]; then
    echo "${task}_fp32 reused" >> "$R/walls.txt"
  else
    run "$T_TEACHER" "${task}_fp32" $common --bits=fp32 $tflags
  fi
  local jobs=0
  for seed in $seeds; do for v in "${VARIANTS[@]}"; do
    local name=${v%%|*} flags=${v#*|}
    [[ -n "${VARIANTS_ONLY:-}" && ! "$name" =~ ${VARIANTS_ONLY} ]] && continue
    run "$ts" "${task}_${name}_s${seed}" $common --bits=w4a4 --teacher="$R/${task}_fp32" --seed="$seed" \
        $sflags $flags &
    jobs=$((jobs + 1)); if [ "$jobs" -ge "$MAX_PAR" ]; then wait -n; jobs=$((jobs - 1)); fi
  done; done
  wait
}

TASKS=${TASKS:-sst2 mrpc}   # a subset for a quick proof; VARIANTS_ONLY (a regex on names) likewise
[[ " $TASKS " == *" sst2 "* ]] && pipeline sst2 SST-2 "$SST2_T" "$SST2_S" "$T_SST2" "$SST2_SEEDS" &
[[ " $TASKS " == *" mrpc "* ]] && pipeline mrpc MRPC "$MRPC_T" "$MRPC_S" "$T_MRPC" "$MRPC_SEEDS" &
wait
echo "total wall=$(( $(date +%s) - T0 ))s" >> "$R/walls.txt"
$PY results/scripts/collect_composability.py --gather "$R" --sha "$SHA" > "$OUT/composability_runs.json"
tar -czf "$OUT/composability_logs.tar.gz" -C "$R" logs gpu.txt walls.txt
cat "$R/walls.txt"
