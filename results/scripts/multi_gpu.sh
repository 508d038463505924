#!/usr/bin/env bash
# Issue 18: the same training job on 1 GPU and on all N GPUs of one host, same global batch, fp32 compute.
#
#   OUT=... DATA=... MINILM=... PART=glue bash results/scripts/multi_gpu.sh   # ~5 min on 2 x H200 (estimate)
#   OUT=... DATA=... PART=lm bash results/scripts/multi_gpu.sh                # ~6 min on 2 x H200 (estimate)
#   python results/scripts/collect_multi_gpu.py <OUT>/multi_gpu_*.tgz      # -> results/multi_gpu.{md,json,png}
#
# Jobs: glue = all-MiniLM-L6-v2 ($MINILM) W4A4 sym QAT+KD on SST-2 ($DATA/glue/SST-2) from a short FP32 teacher
# (trained first, on 1 GPU); lm = the GPT-2 base PTB teacher (scratch, $DATA/ptb, tokenizer $DATA/tokenizers/gpt2,
# block 1024, global batch 8 per GPU). Each job runs as four legs of STEPS steps, logging every step:
#   one, all                        first STEPS/2 steps on 1 GPU / on N GPUs (fresh), stopped by --max_steps_this_run;
#   one -> one, all -> all          the same run directories resumed on the same device count (the reference curves);
#   one -> all, all -> one          copies of them taken at STEPS/2, resumed on the other device count (resume check).
# Throughput is each leg's metrics.jsonl `examples_per_s` (training steps only: no compile, eval or checkpointing;
# with a log row per step, every step waits for its loss). fp32 matmuls run at full precision
# (JAX_DEFAULT_MATMUL_PRECISION=highest, no TF32), so 1 vs N differ only by reduction order.
# Writes $OUT/multi_gpu_<part>.tgz (run dirs' metrics, summaries, logs) and $OUT/multi_gpu_<part>.json (meta).
# SMOKE=1: the same logic on the CPU with SMOKE_DEVICES (default 2) forced host devices, tiny models, ~3 min.
# With fewer than 2 GPUs visible it prints why and exits 3 without running anything.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 NCCL_NVLS_ENABLE=0 XLA_PYTHON_CLIENT_PREALLOCATE=false
export JAX_DEFAULT_MATMUL_PRECISION=${MATMUL_PRECISION:-highest}
# Legs on the same device count run the same programs: compile each once (a cache hit is the same executable).
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-${R:-/tmp/multi_gpu_runs}/jax_cache}
: "${OUT:?set OUT to the output folder}"; : "${DATA:?set DATA to the folder holding glue/SST-2, ptb, tokenizers/gpt2}"
PART=${PART:-glue}; PY=${PY:-python3}; SMOKE=${SMOKE:-0}
R=${R:-/tmp/multi_gpu_runs}/$PART; mkdir -p "$R" "$OUT"
case $PART in glue|lm) ;; *) echo "multi_gpu.sh: PART=$PART must be glue or lm" >&2; exit 2;; esac

if [ "$SMOKE" = 1 ]; then
  N=${SMOKE_DEVICES:-2}
  on_devices() { local n=$1; shift; JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$n" "$@"; }
else
  N=${NDEV:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')}
  on_devices() { local n=$1; shift; CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((n - 1))) "$@"; }
fi
if [ "$N" -lt 2 ]; then
  msg="multi_gpu.sh: $N GPU(s) visible; the 1-vs-N comparison needs at least 2 (an nvidia-h200-x2 or larger machine). Nothing was run."
  echo "$msg" >&2
  printf '{"status": "blocked", "part": "%s", "num_devices": %s, "reason": "%s"}\n' "$PART" "$N" "$msg" > "$OUT/multi_gpu_$PART.json"
  exit 3
fi

STEPS=${STEPS:-200}; HALF=$((STEPS / 2))
COMMON="--num_train_steps=$STEPS --warmup_steps=$((STEPS / 10)) --log_every_steps=1 --eval_every_steps=$STEPS --compute_dtype=float32 --git_commit=${GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
if [ "$PART" = glue ]; then
  if [ "$SMOKE" = 1 ]; then
    MODEL="--task=synthetic --model=bert_tiny"; BS=${BS:-32}; T_STEPS=${T_STEPS:-40}
  else
    : "${MINILM:?set MINILM to the all-MiniLM-L6-v2 checkpoint folder}"
    MODEL="--task=sst2 --model=$MINILM --data_dir=$DATA/glue/SST-2 --max_seq_length=64"; BS=${BS:-64}; T_STEPS=${T_STEPS:-150}
  fi
  on_devices 1 $PY -m experiments.glue $MODEL --bits=fp32 --num_train_steps=$T_STEPS --eval_every_steps=$T_STEPS \
    --log_every_steps=50 --batch_size=32 --workdir=$R/teacher > $R/teacher.log 2>&1 || { tail -5 $R/teacher.log; exit 1; }
  CMD="$PY -m experiments.glue $MODEL --bits=w4a4 --quant_mode=sym --teacher=$R/teacher --batch_size=$BS $COMMON"
else
  if [ "$SMOKE" = 1 ]; then   # a 2000-line slice of PTB and a 1-layer, 32-wide GPT-2 with the real tokenizer
    mkdir -p $R/ptb; for s in train valid test; do head -n 2000 $DATA/ptb/ptb.$s.txt > $R/ptb/ptb.$s.txt; done
    D=$R/ptb; MODEL="--model=gpt2_base --n_layer=1 --n_embd=32 --n_head=2 --n_positions=64 --block_size=32 --eval_batch_size=64"
    BS=${BS:-$((4 * N))}
  else
    D=$DATA/ptb; MODEL="--model=gpt2_base --block_size=1024 --eval_batch_size=$((4 * N))"; BS=${BS:-$((8 * N))}
  fi
  $PY -c "from int4jax import tokenizers; from int4jax.data import lm
lm.load_corpus('ptb', tokenizers.load_tokenizer('$DATA/tokenizers/gpt2'), data_dir='$D', cache_dir='$R/cache')" \
    > $R/tokenize.log 2>&1 || { tail -5 $R/tokenize.log; exit 1; }
  CMD="$PY -m experiments.lm $MODEL --bits=fp32 --dataset=ptb --data_dir=$D --tokenizer=$DATA/tokenizers/gpt2 --cache_dir=$R/cache --batch_size=$BS $COMMON"
fi

T0=$(date +%s)
leg() {  # leg <devices> <run dir> [extra flags]: one launcher call, logged to <run dir>.log (appended)
  local n=$1 dir=$2; shift 2
  local t=$(date +%s)
  on_devices $n $CMD --workdir=$R/$dir "$@" >> $R/$dir.log 2>&1
  local rc=$?
  echo "$dir on $n device(s) $* rc=$rc wall=$(( $(date +%s) - t ))s" | tee -a $R/legs.txt
  [ $rc = 0 ] || { tail -5 $R/$dir.log; exit 1; }
}
leg 1 one --max_steps_this_run=$HALF
leg $N all --max_steps_this_run=$HALF
cp -r $R/one $R/one_then_all; cp $R/one.log $R/one_then_all.log
cp -r $R/all $R/all_then_one; cp $R/all.log $R/all_then_one.log
leg 1 one
leg $N all
leg $N one_then_all
leg 1 all_then_one
echo "part $PART done in $(( $(date +%s) - T0 ))s" | tee -a $R/legs.txt

$PY - "$PART" "$N" "$STEPS" "$HALF" "$BS" "$SMOKE" > "$OUT/multi_gpu_$PART.json" <<'PYEOF'
import json, subprocess, sys
import jax
part, n, steps, half, bs, smoke = sys.argv[1:]
try:
  gpus = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                        capture_output=True, text=True).stdout.strip().splitlines()
except OSError:
  gpus = []
print(json.dumps({"status": "ran", "part": part, "num_devices": int(n), "steps": int(steps), "half": int(half),
                  "global_batch": int(bs), "smoke": smoke == "1", "gpus": gpus, "jax": jax.__version__}, indent=1))
PYEOF
tar -czf "$OUT/multi_gpu_$PART.tgz" -C "$(dirname $R)" $(cd "$(dirname $R)" && ls -d $PART/*.log $PART/legs.txt \
  $PART/*/metrics.jsonl $PART/*/summary.json $PART/*/results.json $PART/*/config.json $PART/*/command.txt 2>/dev/null)
echo "wrote $OUT/multi_gpu_$PART.tgz and $OUT/multi_gpu_$PART.json"
