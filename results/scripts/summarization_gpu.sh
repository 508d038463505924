#!/bin/bash
# BART summarization on XSum (issue 13), one H200, about 6-7 minutes:
#   1. pretrain a small BART (6+6 layers x 384) with BART's denoising objective (text infilling + sentence
#      permutation) on PTB train + WikiText-2 valid/test + the XSum documents of our train part (never the held-out);
#   2. fine-tune it on the XSum subset's train part (FP teacher);
#   3. four W4A4 QAT+KD students at once: sym, asym, 6+3 (decoder layers 0,2,5) and 6+1 (decoder layer 5);
#   4. each run reloads its best checkpoint, beam-decodes the held-out part and stores per-position loss.
# Writes $OUT/summarization_runs.tar (results.json + logs of every run) and $OUT/gpu.json; turn them into
# results/summarization_xsum.{md,json} + the positional plot with results/scripts/collect_summarization.py (CPU).
# Data under $DATA: ptb/ptb.train.txt, wikitext-2/wiki.{valid,test}.tokens, xsum/test_subset1000.jsonl,
# tokenizers/gpt2/. SMOKE=1: a tiny CPU run of the same steps (minutes on 2 cores).
#   usage: DATA=carry/data OUT=/tmp/out PYTHONPATH=. bash results/scripts/summarization_gpu.sh
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=${PYTHONPATH:-.}
PY=${PYTHON:-python3}
R=${RUNS:-/tmp/sum_runs}; rm -rf $R; mkdir -p $R $OUT
XSUM=$DATA/xsum/test_subset1000.jsonl
TEXT=$DATA/ptb/ptb.train.txt,$DATA/wikitext-2/wiki.valid.tokens,$DATA/wikitext-2/wiki.test.tokens
if [ "${SMOKE:-0}" = 1 ]; then
  S=$R/smoke_data; mkdir -p $S
  head -60 $XSUM > $S/xsum.jsonl; head -200 $DATA/ptb/ptb.train.txt > $S/ptb.txt; XSUM=$S/xsum.jsonl; TEXT=$S/ptb.txt
  ARCH=d_model=16,encoder_layers=2,decoder_layers=6,encoder_attention_heads=2,decoder_attention_heads=2,encoder_ffn_dim=32,decoder_ffn_dim=32,max_position_embeddings=128
  PRE="--batch_size=4 --num_train_steps=4 --eval_every_steps=2 --source_max_len=32 --target_max_len=32"
  FT="--batch_size=4 --num_train_steps=4 --eval_every_steps=2"; ST="$FT"
  LEN="--source_max_len=64 --target_max_len=24 --max_gen_length=12 --eval_batch_size=4 --num_beams=2"
  B_PRE=100000; B_FT=100000; B_ST=100000; DT=float32   # no time budget: the CPU is slow and shared
else
  ARCH=d_model=384,encoder_layers=6,decoder_layers=6,encoder_attention_heads=6,decoder_attention_heads=6,encoder_ffn_dim=1536,decoder_ffn_dim=1536,max_position_embeddings=512
  PRE="--batch_size=64 --num_train_steps=6000 --eval_every_steps=250 --checkpoint_every_steps=100000 --learning_rate=5e-4 --warmup_steps=300 --source_max_len=128 --target_max_len=128 --eval_batch_size=64"
  FT="--batch_size=32 --num_train_steps=420 --eval_every_steps=42 --checkpoint_every_steps=100000 --learning_rate=1e-4 --warmup_steps=20"
  ST="--batch_size=32 --num_train_steps=560 --eval_every_steps=70 --checkpoint_every_steps=100000 --learning_rate=1e-4 --warmup_steps=20"
  LEN="--source_max_len=512 --target_max_len=64 --eval_batch_size=50"   # XSum decoding: DQ-BART defaults (6 beams, max 62, min 11)
  B_PRE=${PRETRAIN_S:-100}; B_FT=${FINETUNE_S:-65}; B_ST=${STUDENT_S:-130}; DT=bfloat16
fi
TOK="--tokenizer=$DATA/tokenizers/gpt2 --dataset=xsum --data_dir=$XSUM --heldout_fraction=0.1 --split_seed=0"
COMMON="$TOK --compute_dtype=$DT --log_every_steps=50"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  $PY -c "import jax, flax, optax; print(jax.__version__, flax.__version__, optax.__version__, jax.devices())"
  echo "commit ${GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null)}"; } > $R/gpu.txt 2>&1
T0=$(date +%s)
stamp() { echo "$1 rc=$2 wall=$(( $(date +%s) - $3 ))s" >> $R/gpu.txt; }

$PY -m experiments.summarize --objective=denoise --model=bart_base --arch=$ARCH --text_files=$TEXT $COMMON $PRE \
    --dropout=0.1 --time_budget_s=$B_PRE --workdir=$R/denoise > $R/denoise.log 2>&1
stamp denoise $? $T0
T1=$(date +%s)
# Fine-tune the denoiser (or, should pretraining have failed, a random init of the same shape: the log says which).
INIT="--init=$R/denoise"; [ -f $R/denoise/results.json ] || INIT="--model=bart_base --arch=$ARCH"
echo "fine-tune from: $INIT" >> $R/gpu.txt
$PY -m experiments.summarize $INIT $COMMON $LEN $FT --dropout=0.1 --time_budget_s=$B_FT \
    --workdir=$R/fp32 > $R/fp32.log 2>&1 &
FP=$!
# Students start once the teacher has finished training (its evaluation runs beside them).
while kill -0 $FP 2>/dev/null && ! grep -qE "^summary:|time_budget_s=.* reached" $R/fp32.log; do sleep 2; done
stamp fp32_trained 0 $T1
T2=$(date +%s)
for cfg in "w4a4_sym --symmetric" "w4a4_asym --nosymmetric" "w4a4_6+3 --decoder_layer_map=0,2,5" \
           "w4a4_6+1 --decoder_layer_map=5"; do set -- $cfg
  ( XLA_PYTHON_CLIENT_MEM_FRACTION=0.2 $PY -m experiments.summarize --teacher=$R/fp32 --bits=w4a4 $2 $COMMON $LEN $ST \
        --dropout=0.0 --time_budget_s=$B_ST --workdir=$R/$1 > $R/$1.log 2>&1
    stamp $1 $? $T2 ) &
done
wait $FP; stamp fp32 $? $T1
wait
stamp all 0 $T0
$PY - "$R" > $OUT/gpu.json <<'EOF'
import json, os, sys
root = sys.argv[1]
runs = {d: json.load(open(os.path.join(root, d, "results.json"))) for d in sorted(os.listdir(root))
        if os.path.isfile(os.path.join(root, d, "results.json"))}
print(json.dumps({"gpu": open(os.path.join(root, "gpu.txt")).read(),
                  "runs": {k: {x: v.get(x) for x in ("best_step", "steps_run", "train_wall_time_s")} | {
                      "loss": v["valid"]["loss"]} for k, v in runs.items()}}, indent=1))
EOF
tar -C $R --exclude=checkpoints --exclude=smoke_data -cf $OUT/summarization_runs.tar .
echo "done in $(( $(date +%s) - T0 ))s"; cat $R/gpu.txt
