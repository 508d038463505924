#!/usr/bin/env bash
# The device driver behind results/lm_ptb.md (run as .carry_lm/run_ptb2.sh, with .carry_lm holding ptb.*.txt and gpt2/).
# Call 2: Pre-LN and Post-LN teachers (scratch, full LR decay) in parallel -> FP32-KD control + 4 quantized
# students (Pre-LN) + W4A4 Post-LN student, all in parallel -> analyses -> generation. Logs to $OUT.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2
D=${D:-.carry_lm}; R=${R:-/tmp/lm_runs}; OUT=${OUT:-/tmp/lm_out}; mkdir -p $R $OUT
PY=${PY:-python3}
COMMON="--dataset=ptb --data_dir=$D --tokenizer=$D/gpt2 --block_size=${BLOCK:-512} --cache_dir=$R/cache --compute_dtype=${DTYPE:-bfloat16} --log_every_steps=${LOGN:-100}"
MODEL="--model=gpt2_base --n_layer=${NL:-6} --n_embd=${NE:-512} --n_head=${NH:-8}"
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee $R/gpu.txt
# Tokenize once so the parallel runs share the cache.
$PY -c "
from int4jax import tokenizers; from int4jax.data import lm
lm.load_corpus('ptb', tokenizers.load_tokenizer('$D/gpt2'), data_dir='$D', cache_dir='$R/cache')"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
T="--bits=fp32 --dropout=0.1 --learning_rate=${T_LR:-6e-4} --batch_size=${T_BS:-16} --num_train_steps=${T_STEPS:-1200} --warmup_steps=${T_WARM:-200} --eval_every_steps=${T_EVAL:-200} --time_budget_s=${T_BUDGET:-150}"
timeout ${T_TIMEOUT:-200} $PY -m experiments.lm $COMMON $MODEL $T --workdir=$R/fp > $R/fp.log 2>&1 &
timeout ${T_TIMEOUT:-200} $PY -m experiments.lm $COMMON $MODEL $T --post_ln --workdir=$R/post_fp > $R/post_fp.log 2>&1 &
wait; echo "teachers done at $(( $(date +%s) - T0 ))s"
grep -a "RESULT\|model:\|budget\|Error" $R/fp.log $R/post_fp.log | tail -6
# On-demand allocation: six student steps of ~10 GB each fit in 80 GB; fixed fractions would not.
S="--learning_rate=${S_LR:-1e-4} --batch_size=${S_BS:-8} --num_train_steps=${S_STEPS:-500} --eval_every_steps=${S_EVAL:-100} --time_budget_s=${S_BUDGET:-190}"
for cfg in "fp_kd fp --bits=fp32 --kd_losses=gt,logit,att,rep" "w4a16 fp --bits=w4a16" "w4a8 fp --bits=w4a8" \
           "w4a4 fp --bits=w4a4" "w4a4_asym fp --bits=w4a4 --quant_mode=asym" "post_w4a4 post_fp --bits=w4a4"; do
  set -- $cfg; name=$1; teacher=$2; shift 2
  timeout ${S_TIMEOUT:-250} $PY -m experiments.lm $COMMON $S --teacher=$R/$teacher "$@" --workdir=$R/$name > $R/$name.log 2>&1 &
done
wait; echo "students done at $(( $(date +%s) - T0 ))s"
for n in fp_kd w4a16 w4a8 w4a4 w4a4_asym post_w4a4; do grep -a "RESULT\|budget\|Error" $R/$n.log | tail -2; done
unset XLA_PYTHON_CLIENT_PREALLOCATE
mkdir -p $R/an
timeout 100 $PY -m experiments.lm_analysis --analysis=positional,sensitivity,act_range --output_dir=$R/an \
  --runs=fp=$R/fp,fp_kd=$R/fp_kd,w4a16=$R/w4a16,w4a8=$R/w4a8,w4a4_sym=$R/w4a4,w4a4_asym=$R/w4a4_asym \
  --act_range_runs=fp,w4a4_sym,w4a4_asym > $R/analysis.log 2>&1; echo "analysis rc=$? at $(( $(date +%s) - T0 ))s"
grep -av "^I1\|^W1" $R/analysis.log | tail -16
timeout 40 $PY -m experiments.lm_analysis --analysis=ln --output_dir=$R/an \
  --runs=pre_fp=$R/fp,pre_w4a4=$R/w4a4,post_fp=$R/post_fp,post_w4a4=$R/post_w4a4 2>&1 | grep -av "^I1\|^W1" | tail -5
cp $R/an/positional_perplexity.* $R/an/activation_range.* $OUT/
for n in fp w4a4; do timeout 35 $PY -m experiments.generate --workdir=$R/$n --prompt=" the company said" \
  --max_new_tokens=${GEN:-40} 2>&1 | grep -av "^I1\|^W1" | tail -3; done > $R/generate.txt
cat $R/generate.txt; echo "all done at $(( $(date +%s) - T0 ))s"
$PY - "$R" > $OUT/runs.json <<'PYEOF'
import json, os, sys
out = {}
for n in ("fp", "fp_kd", "w4a16", "w4a8", "w4a4", "w4a4_asym", "post_fp", "post_w4a4"):
  p = os.path.join(sys.argv[1], n, "results.json")
  if os.path.exists(p):
    r = json.load(open(p))
    for s in ("valid", "test"):
      r[s] = {k: v for k, v in r[s].items() if "by_position" not in k}
    out[n] = r
print(json.dumps(out, indent=1))
PYEOF
tar -czf $OUT/logs.tgz -C $R gpu.txt generate.txt an $(cd $R && ls *.log) $(cd $R && ls */metrics.jsonl 2>/dev/null)
