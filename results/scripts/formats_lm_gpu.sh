#!/usr/bin/env bash
# The device driver behind the decoder rows of results/formats.md (issue 17, the 4-bit format zoo, LM side): the
# results/lm_ptb.md setting, GPT-2 6 layers x 512 (8 heads) from scratch on PTB, block 512, bf16 compute.
#   1. one FP32 teacher (lr 6e-4, batch 16, dropout 0.1, 1200 steps, warmup 200);
#   2. the five students of int4jax/analysis/format_zoo.STUDENTS (INT4 sym, INT4 asym, MXFP4, NVFP4 W4A4, ternary
#      W + INT8 A), each initialised from the teacher and distilled from it with the same recipe (LM CE + Logit +
#      Att* + Rep, weight clip [-1, 1], lr 1e-4, batch 8, dropout 0.05, 500 steps): per seed of $SEEDS, at most $JOBS
#      processes at once (XLA_PYTHON_CLIENT_PREALLOCATE=false: they share the GPU's memory on demand).
#   3. python -m experiments.formats --lm_collect: $OUT/formats_lm_runs.json (per run: bits, quant_mode, seed,
#      valid/test perplexity of the best checkpoint re-evaluated in float32, steps run, wall time, command) and
#      $OUT/formats_lm_logs.tgz (logs, config/metrics/results of every run, no checkpoints).
# Then, on the CPU machine: python -m experiments.formats --lm_runs=formats_lm_runs.json --results=results/formats
#
#   DATA=.carry_fmt/data OUT=$OUT bash results/scripts/formats_lm_gpu.sh     # GPU: one H200, ~6 minutes
#   SMOKE=1 DATA=../shared/data PY=.venv/bin/python bash results/scripts/formats_lm_gpu.sh   # CPU: same path, tiny
# DATA holds ptb/ptb.{train,valid,test}.txt and tokenizers/gpt2/{encoder.json,vocab.bpe} (6.9 MB: carry it).
#
# Wall budget: BUDGET_S (default 300) seconds of training in all, compilation included, through each run's
# --time_budget_s: the teacher gets T_SHARE percent (35: 105 s; 1200 steps alone on the GPU ~60 s + ~25 s start-up
# and compilation), the students the rest, split over the waves that $JOBS leaves (one seed of five at JOBS>=5: one
# wave of 195 s; 500 steps of five KD students sharing the GPU ~120 s + ~45 s compilation, extrapolated from
# lm_ptb.md's six students on an H100: 500 steps in ~140 s, i.e. ~47 ms of shared GPU per student step). A run that
# reaches its budget stops and is evaluated from its best checkpoint so far (its row is starred in the table: fewer
# steps than the others). Each process is also killed at its budget + EVAL_S (90 s: the float32 re-evaluation of
# valid and test takes ~20 s); a killed run is collected as partial. So the script ends by
# BUDGET_S + (1 + waves) x EVAL_S + ~30 s, typically ~BUDGET_S + 60 s.
# Three seeds (SEEDS=1,2,3: 15 students, 2 waves at JOBS=8) need 15 x 500 x ~47 ms = ~6 minutes of student GPU
# time at 500 steps: BUDGET_S=620 (~11.5 minutes in all). Inside a 10-minute call: SEEDS=1,2,3 JOBS=8 S_STEPS=250
# T_SHARE=25 BUDGET_S=440 (~9 minutes; 8 x 250 steps ~95 s + ~50 s compilation per 165 s wave), fewer steps per row.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2
PY=${PY:-python3}
DATA=${DATA:-.carry_fmt/data}; R=${R:-/tmp/formats_lm}; OUT=${OUT:-/tmp/formats_lm_out}
SETTING=${SETTING:-ptb_gpt2}; SEEDS=${SEEDS:-1}; JOBS=${JOBS:-5}
BUDGET_S=${BUDGET_S:-300}; T_SHARE=${T_SHARE:-35}; EVAL_S=${EVAL_S:-90}
COMMIT=${GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
[ "$JOBS" -ge 1 ] && [ "$JOBS" -le 8 ] || { echo "JOBS=$JOBS must be 1..8"; exit 2; }
for f in ptb/ptb.train.txt ptb/ptb.valid.txt ptb/ptb.test.txt tokenizers/gpt2/encoder.json tokenizers/gpt2/vocab.bpe; do
  [ -f "$DATA/$f" ] || { echo "DATA=$DATA has no $f"; exit 2; }
done
mkdir -p $R/runs $R/logs $OUT
T0=$(date +%s)
if [ "${SMOKE:-0}" = 1 ]; then
  # CPU: the first lines of PTB, a 2 x 64 GPT-2, a few steps; the budgets are not reached.
  mkdir -p $R/data/ptb
  for s in train valid test; do head -n ${SMOKE_LINES:-200} $DATA/ptb/ptb.$s.txt > $R/data/ptb/ptb.$s.txt; done
  PTB=$R/data/ptb
  MODEL="--model=gpt2_base --n_layer=2 --n_embd=64 --n_head=2"
  : ${BLOCK:=32} ${DTYPE:=float32} ${T_BS:=4} ${T_STEPS:=16} ${T_WARM:=2} ${T_EVAL:=8}
  : ${S_BS:=4} ${S_STEPS:=6} ${S_EVAL:=3}
else
  PTB=$DATA/ptb
  MODEL="--model=gpt2_base --n_layer=6 --n_embd=512 --n_head=8"
  : ${BLOCK:=512} ${DTYPE:=bfloat16} ${T_BS:=16} ${T_STEPS:=1200} ${T_WARM:=200} ${T_EVAL:=200} ${S_BS:=8}
  : ${S_STEPS:=500} ${S_EVAL:=100}
fi
TOK=$DATA/tokenizers/gpt2
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
GPU=${GPU:-cpu}; echo "$GPU" > $R/gpu.txt
COMMON="--dataset=ptb --data_dir=$PTB --tokenizer=$TOK --block_size=$BLOCK --eval_batch_size=8 --cache_dir=$R/cache
 --compute_dtype=$DTYPE --log_every_steps=${LOGN:-100}"
# The students' names and formats from format_zoo (the one list of formats), seed-major: every format of the first
# seed starts before any of the next.
PLAN=$($PY -c "
from int4jax.analysis import format_zoo as z
print(z.run_name('$SETTING', z.TEACHER, None))
for seed in '$SEEDS'.split(','):
  for s in z.STUDENTS:
    print(z.run_name('$SETTING', s, int(seed)), s.bits, s.quant_mode, seed)") || { echo "bad SEEDS=$SEEDS"; exit 2; }
TEACHER=$(echo "$PLAN" | head -1); STUDENT_PLAN=$(echo "$PLAN" | tail -n +2)
N=$(echo "$STUDENT_PLAN" | wc -l); WAVES=$(( (N + JOBS - 1) / JOBS ))
T_BUDGET=$(( BUDGET_S * T_SHARE / 100 )); S_BUDGET=$(( (BUDGET_S - T_BUDGET) / WAVES ))
echo "$GPU; $N students in $WAVES wave(s) of <= $JOBS; budgets: teacher $T_BUDGET s, student $S_BUDGET s"
# Tokenize once so the parallel runs share the cache; JAX's persistent cache lets a later seed skip compilation.
$PY -c "
from int4jax import tokenizers; from int4jax.data import lm
lm.load_corpus('ptb', tokenizers.load_tokenizer('$TOK'), data_dir='$PTB', cache_dir='$R/cache', log=print)" || exit 1
export JAX_COMPILATION_CACHE_DIR=$R/jax_cache XLA_PYTHON_CLIENT_PREALLOCATE=false

run() {  # name budget args...: one experiments.lm process; a run whose results.json exists is kept (re-running the
         # driver on the same machine finishes the rest). latest/ is saved only at the end (best/ at every better
         # validation, which is what the results use): no ~0.5 GB optimizer-state writes per evaluation.
  local name=$1 budget=$2; shift 2
  if [ -f $R/runs/$name/results.json ]; then echo "$name: kept ($R/runs/$name/results.json exists)"; return; fi
  timeout $(( budget + EVAL_S )) $PY -m experiments.lm $COMMON "$@" --time_budget_s=$budget --workdir=$R/runs/$name \
    --checkpoint_every_steps=1000000 --git_commit=$COMMIT < /dev/null > $R/logs/$name.log 2>&1
  echo "$name rc=$? at $(( $(date +%s) - T0 ))s: $(grep -a 'RESULT\|budget\|Error' $R/logs/$name.log | tail -1)"
}

run $TEACHER $T_BUDGET $MODEL --bits=fp32 --dropout=0.1 --learning_rate=${T_LR:-6e-4} --batch_size=$T_BS \
  --num_train_steps=$T_STEPS --warmup_steps=$T_WARM --eval_every_steps=$T_EVAL --seed=${SEEDS%%,*}
echo "teacher done at $(( $(date +%s) - T0 ))s"
if [ -f $R/runs/$TEACHER/results.json ]; then
  while read -r name bits mode seed; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    run $name $S_BUDGET --teacher=$R/runs/$TEACHER --bits=$bits --quant_mode=$mode --seed=$seed \
      --learning_rate=${S_LR:-1e-4} --batch_size=$S_BS --num_train_steps=$S_STEPS --eval_every_steps=$S_EVAL &
  done <<< "$STUDENT_PLAN"
  wait
  echo "students done at $(( $(date +%s) - T0 ))s"
else
  echo "the teacher did not finish (see $R/logs/$TEACHER.log): no students"
fi
$PY -m experiments.formats --lm_collect=$R/runs --lm_setting=$SETTING --seeds=$SEEDS \
  --runs_json=$OUT/formats_lm_runs.json --git_commit=$COMMIT --gpu="$GPU" 2>&1 | grep -av "^I1\|^W1"
$PY - $OUT/formats_lm_runs.json <<'PYEOF'
import json, sys
for r in json.load(open(sys.argv[1]))["runs"]:
  ppl = lambda v: "-" if v is None else f"{v:.2f}"
  print(f"{r['name']:34s} {r['status']:8s} valid {ppl(r['valid_ppl']):>7s} test {ppl(r['test_ppl']):>7s} "
        f"steps {r.get('steps')} wall {r.get('wall_time_s') and round(r['wall_time_s'])} s {r.get('reason', '')}")
PYEOF
tar -czf $OUT/formats_lm_logs.tgz -C $R gpu.txt logs \
  $(cd $R && ls -d runs/*/{config.json,command.txt,metrics.jsonl,results.json,summary.json} 2>/dev/null)
echo "all done at $(( $(date +%s) - T0 ))s"
