#!/usr/bin/env bash
# The device driver behind results/lm_smollm2.md (issue 15): pretrained SmolLM2-135M (Llama; Q4_1 GGUF re-encoded as
# qblocks parts, see results/lm_smollm2_recipe.md) on PTB, with WikiText-2 valid/test evaluated by every run.
#   phase A (parallel): zero-shot eval of the pretrained weights ("zs": 1 step at lr 1e-9, i.e. no change);
#                       the teacher "fp" = the pretrained model fine-tuned briefly on PTB;
#                       "scratch_fp" = the same architecture from random init, same steps and wall budget.
#   phase B (parallel): W4-only (w4a16), W4A8, W4A4 sym, W4A4 asym QAT+KD students of fp; W4A4 sym of scratch_fp.
#   phase C: positional perplexity, sensitivity, activation range (lm_failure), for pretrained and scratch.
# Writes $OUT/runs.json (results without per-position arrays) and $OUT/logs.tgz (logs, metrics, analysis json/png).
# GPU: one H200, ~6-7 minutes (budgets below). SMOKE=1 (+ SEQUENTIAL=1 on a small-memory machine): a tiny random
# Llama on the CPU, same code path.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2
PY=${PY:-python3}
DATA=${DATA:-.carry_smol/data}; R=${R:-/tmp/smol_runs}; OUT=${OUT:-/tmp/smol_out}; mkdir -p $R $OUT
T0=$(date +%s)
if [ "${SMOKE:-0}" = 1 ]; then
  $PY results/scripts/lm_smollm2_tiny_fixture.py $R/fixture $DATA/tokenizers/gpt2 || exit 1
  W=$R/fixture/qblocks
  mkdir -p $R/data/ptb $R/data/wikitext-2   # the first lines of each file: CPU-sized corpora
  for s in train valid test; do head -n ${SMOKE_LINES:-100} $DATA/ptb/ptb.$s.txt > $R/data/ptb/ptb.$s.txt; done
  for s in valid test; do head -n ${SMOKE_LINES:-100} $DATA/wikitext-2/wiki.$s.tokens > $R/data/wikitext-2/wiki.$s.tokens; done
  DATA=$R/data
  : ${BLOCK:=64} ${BS:=4} ${T_STEPS:=4} ${S_STEPS:=4} ${EVAL:=2} ${TA:=1500} ${TB:=1500} ${AN_BATCHES:=2} ${DTYPE:=float32}
  SCRATCH_MODEL="--model=llama_tiny --n_positions=512"
elif [ "${ONLY_SCRATCH:-0}" = 1 ]; then
  # ONLY_SCRATCH=1: the scratch-trained pair alone (scratch_fp, scratch_w4a4 and their analysis), for a run whose
  # pretrained half is already measured; needs only SmolLM2's tokenizer (TOKENIZER_DIR), not the weights.
  W=${TOKENIZER_DIR:-.carry_smol/smollm2}
  [ -f $W/tokenizer.json ] || { echo "ONLY_SCRATCH=1: no tokenizer.json in $W (set TOKENIZER_DIR)"; exit 1; }
else
  # The qblocks checkpoint: every file of .carry_smol/smollm2 (call 2) plus part 0, carried by call 1 into
  # /tmp/smollm2 (or still in .carry_smol_p0/); assembled here by symlinks, checked against the index's sha256.
  W=$R/smollm2; mkdir -p $W
  for f in ${WEIGHTS:-.carry_smol/smollm2}/* ${PART0_DIR:-/tmp/smollm2}/* .carry_smol_p0/*; do
    [ -f "$f" ] && ln -sf "$(readlink -f "$f")" $W/
  done
  $PY - $W <<'PYEOF' || exit 1
import hashlib, json, pathlib, sys
w = pathlib.Path(sys.argv[1]); index = json.loads((w / "qblocks.json").read_text())
for part, info in index["parts"].items():
  p = w / part
  if not p.is_file():
    sys.exit(f"missing {p}: carry it (results/lm_smollm2_recipe.md)")
  if hashlib.sha256(p.read_bytes()).hexdigest() != info["sha256"]:
    sys.exit(f"{p} is not the file the index names (sha256 differs)")
print("qblocks parts verified:", ", ".join(index["parts"]))
PYEOF
fi
if [ "${SMOKE:-0}" != 1 ]; then   # the GPU setting, pretrained or scratch alike
  : ${BLOCK:=512} ${BS:=8} ${T_STEPS:=300} ${S_STEPS:=300} ${EVAL:=50} ${TA:=120} ${TB:=130} ${AN_BATCHES:=8}
  : ${DTYPE:=bfloat16}
  SCRATCH_MODEL="--model=smollm2_135m"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee $R/gpu.txt
COMMON="--dataset=ptb --data_dir=$DATA/ptb --tokenizer=$W --block_size=$BLOCK --batch_size=$BS --eval_batch_size=$BS
 --cache_dir=$R/cache --compute_dtype=$DTYPE --log_every_steps=${LOGN:-50} --eval_every_steps=$EVAL --weight_clip=none
 --extra_eval=wikitext2=$DATA/wikitext-2 --dropout=0"
# Tokenize once (PTB and WikiText-2) so the parallel runs share the cache.
$PY -c "
from int4jax import tokenizers; from int4jax.data import lm
tok = tokenizers.load_tokenizer('$W')
lm.load_corpus('ptb', tok, data_dir='$DATA/ptb', cache_dir='$R/cache', log=print)
lm.load_corpus('wikitext2', tok, data_dir='$DATA/wikitext-2', splits=('valid', 'test'), cache_dir='$R/cache', log=print)
" || exit 1
export XLA_PYTHON_CLIENT_PREALLOCATE=false
run() {  # name timeout args...; a run whose results.json exists is kept (re-running the driver finishes the rest)
  local name=$1 limit=$2; shift 2
  if [ -f $R/$name/results.json ]; then echo "$name: kept ($R/$name/results.json exists)"; return; fi
  timeout $limit $PY -m experiments.lm $COMMON "$@" --workdir=$R/$name > $R/$name.log 2>&1
  echo "$name rc=$? at $(( $(date +%s) - T0 ))s: $(grep -a 'RESULT\|Error' $R/$name.log | tail -1)"
}
BG="&"; [ "${SEQUENTIAL:-0}" = 1 ] && BG=""   # SEQUENTIAL=1: one run at a time (small-memory CPU machines)
PRE=1; [ "${ONLY_SCRATCH:-0}" = 1 ] && PRE=0   # PRE=0: no pretrained runs (ONLY_SCRATCH)
[ $PRE = 1 ] && eval run zs $(( TA + 90 )) --model=$W --bits=fp32 --num_train_steps=1 --warmup_steps=0 --learning_rate=1e-9 $BG
[ $PRE = 1 ] && eval run fp $(( TA + 90 )) --model=$W --bits=fp32 --learning_rate=${T_LR:-3e-5} --num_train_steps=$T_STEPS \
  --warmup_steps=$(( T_STEPS / 10 )) --time_budget_s=$TA $BG
# SKIP_SCRATCH=1: leave out the scratch-trained pair (a re-run on the same warm machine that only finishes the rest).
[ "${SKIP_SCRATCH:-0}" = 1 ] || eval run scratch_fp $(( TA + 90 )) $SCRATCH_MODEL --bits=fp32 --learning_rate=${SCRATCH_LR:-1e-3} \
  --num_train_steps=$T_STEPS --warmup_steps=$(( T_STEPS / 10 )) --time_budget_s=$TA $BG
wait; echo "phase A done at $(( $(date +%s) - T0 ))s"
S="--learning_rate=${S_LR:-5e-5} --num_train_steps=$S_STEPS --warmup_steps=$(( S_STEPS / 10 )) --time_budget_s=$TB ${S_EXTRA:-}"
for cfg in "w4a16 fp --bits=w4a16" "w4a8 fp --bits=w4a8" "w4a4 fp --bits=w4a4" "w4a4_asym fp --bits=w4a4 --quant_mode=asym" \
           "scratch_w4a4 scratch_fp --bits=w4a4"; do
  set -- $cfg; name=$1; teacher=$2; shift 2
  [ "${SKIP_SCRATCH:-0}" = 1 ] && [ $teacher = scratch_fp ] && continue
  [ $PRE = 0 ] && [ $teacher = fp ] && continue
  eval run $name $(( TB + 90 )) $S --teacher=$R/$teacher "$@" $BG
done
wait; echo "phase B done at $(( $(date +%s) - T0 ))s"
unset XLA_PYTHON_CLIENT_PREALLOCATE
mkdir -p $R/an $R/an_scratch
[ $PRE = 1 ] && eval timeout ${AN_TIMEOUT:-150} $PY -m experiments.lm_analysis --analysis=positional,sensitivity,act_range --output_dir=$R/an \
  --runs=fp=$R/fp,w4a16=$R/w4a16,w4a8=$R/w4a8,w4a4_sym=$R/w4a4,w4a4_asym=$R/w4a4_asym \
  --act_range_runs=fp,w4a4_sym,w4a4_asym --num_batches=$AN_BATCHES > $R/analysis.log 2>&1 $BG
[ "${SKIP_SCRATCH:-0}" = 1 ] || eval timeout ${AN_TIMEOUT:-150} $PY -m experiments.lm_analysis --analysis=positional,act_range --output_dir=$R/an_scratch \
  --runs=scratch_fp=$R/scratch_fp,scratch_w4a4=$R/scratch_w4a4 --num_batches=$AN_BATCHES > $R/analysis_scratch.log 2>&1 $BG
wait; echo "analysis done at $(( $(date +%s) - T0 ))s"
grep -av "^I1\|^W1" $(ls $R/analysis*.log 2>/dev/null) /dev/null | tail -30
$PY - "$R" > $OUT/runs.json <<'PYEOF'
import json, os, sys
out = {}
for n in ("zs", "fp", "scratch_fp", "w4a16", "w4a8", "w4a4", "w4a4_asym", "scratch_w4a4"):
  p = os.path.join(sys.argv[1], n, "results.json")
  if os.path.exists(p):
    r = json.load(open(p))
    strip = lambda d: {k: v for k, v in d.items() if "by_position" not in k}
    for s in ("valid", "test"):
      r[s] = strip(r[s])
    for ds in r.get("extra_eval", {}).values():
      for s in list(ds):
        ds[s] = strip(ds[s])
    out[n] = r
json.dump(out, sys.stdout, indent=1)
PYEOF
echo "all done at $(( $(date +%s) - T0 ))s"
tar -czf $OUT/logs.tgz -C $R gpu.txt an an_scratch $(cd $R && ls *.log) $(cd $R && ls */metrics.jsonl 2>/dev/null)
