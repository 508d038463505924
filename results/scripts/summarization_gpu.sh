#!/bin/bash
# BART summarization on XSum (issue 13) on one H200, at most 330 s wall: every process still running at DEADLINE_S
# (315 s) after the start is killed, then ~5 s to pack. All runs are `python -m experiments.summarize`:
#   1. denoise   a small BART (6+6 layers x 384, 6 heads, FFN 1536, 512 positions; GPT-2 BPE + BART's 4 specials)
#                pretrained with BART's denoising objective (text infilling + sentence permutation) on PTB train,
#                WikiText-2 valid/test and the XSum documents of our train part (never the held-out part);
#                batch 64 x 128 tokens, lr 5e-4, <= 4000 steps                         budget PRETRAIN_S=100 s
#   2. fp32      the teacher: the denoiser fine-tuned on the XSum subset's train part (900 of 1000 examples;
#                held-out: the other 100, split seed 0); batch 32, source 512 / summary 64 tokens, lr 1e-4,
#                <= 400 steps (14 epochs), eval every 40                                 budget FINETUNE_S=50 s
#   3. students  four at once, started when the teacher stops training (its evaluation runs beside them): W4A4
#                QAT+KD (gt + logit + Att* + Rep) sym, asym, and the layer-reduced W4A4 6+3 (decoder layers 0,2,5)
#                and 6+1 (decoder layer 5); batch 32, lr 1e-4, <= 500 steps, eval every 50  budget STUDENT_S=75 s
#   Every run then reloads its best checkpoint, stores the held-out loss per summary position (positional
#   perplexity, FP vs W4A4) and beam-decodes the held-out part with DQ-BART's XSum settings (6 beams, max 62, min
#   11); ROUGE is scored by the collector (the GPU machine has no rouge-score).
# Budgets: --time_budget_s counts from the start of a run's training program (data, model and compilation
#   included); training stops at the first step after it once an evaluation has saved best/, and the evaluation
#   then takes ~10-20 s. The step counts are caps that the budgets normally cut first (steps_run says).
# Compile-cache warm-up: XLA compiles each process's programs in ~30-60 s under contention, which would eat these
#   short budgets. While the denoiser trains, warm copies of stages 2 and 3 (the same flags and shapes, a random-
#   init teacher, 1 step, one decode batch; $R/warm/*) fill a shared JAX compilation cache ($R/jax_cache) that the
#   real runs read back in seconds. results.json's startup_s (run start -> first step compiled) shows the effect.
# Expected timeline (estimates: ~8 s of imports a process, ~30-60 s of compilation, ~10-20 s of evaluation; this
# version has not run on the GPU yet; a faster GPU reaches the step caps first and ends earlier):
#      0 s  denoise and warm/fp32 start (the warm students follow warm/fp32, ~75-160 s)
#   ~108 s  denoise stops training (~65 s of steps after start-up and compilation), evaluates, exits ~118 s
#   ~118 s  fp32 starts, compiled programs from the cache; stops training ~176 s; its beam search runs beside the
#           students
#   ~177 s  the 4 students start from the cache; stop training ~260 s; evaluated by ~275 s (~305 s should the
#           cache miss and the beam search compile)
#   ~280 s  gpu.json + tar, done. Hard cap: DEADLINE_S=315 s + 5 s kill grace + packing < 330 s.
# Hard deadline: a run killed before its results.json is reported partial in gpu.json (status, best held-out loss
#   its evaluations logged) and by the collector; runs not started before the deadline are listed as skipped.
#
# Data ($DATA, the sub-paths of ../shared/data): ptb/ptb.train.txt, wikitext-2/wiki.{valid,test}.tokens,
# xsum/test_subset1000.jsonl, tokenizers/gpt2/{encoder.json,vocab.bpe}: 11 MiB. The carry folder (ignored by git):
#   mkdir -p carry/data/ptb carry/data/wikitext-2 carry/data/xsum carry/data/tokenizers
#   cp ../shared/data/ptb/ptb.train.txt carry/data/ptb/
#   cp ../shared/data/wikitext-2/wiki.valid.tokens ../shared/data/wikitext-2/wiki.test.tokens carry/data/wikitext-2/
#   cp ../shared/data/xsum/test_subset1000.jsonl carry/data/xsum/
#   cp -r ../shared/data/tokenizers/gpt2 carry/data/tokenizers/
#   du -sh carry/data        # ~11 MiB (+5 MiB if carry/data also holds glue/): under the 40 MiB limit
# Run (carry ["carry/data"]; the tree has no .git, so pass the commit):
#   DATA=carry/data OUT=$OUT GIT_COMMIT=<sha> PYTHONPATH=. bash results/scripts/summarization_gpu.sh
# Writes 2 files: $OUT/gpu.json (GPU, budgets, every run's status, steps, walls, held-out loss; partial: true when a
# run was cut) and $OUT/summarization_runs.tar (results.json, logs, metrics of every run; no checkpoints). Then, on
# a machine with rouge-score and matplotlib:
#   python results/scripts/collect_summarization.py summarization_runs.tar results
# SMOKE=1: a tiny CPU run of the same path (warm-up, deadline plumbing, collector; ~10 min on 2 shared cores):
#   SMOKE=1 DATA=../shared/data OUT=/tmp/sum_out PYTHONPATH=. bash results/scripts/summarization_gpu.sh
#   (add DEADLINE_S_SMOKE=200 to see the deadline cut the students: gpu.json partial, the table marks them)
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=${PYTHONPATH:-.}
: "${DATA:?set DATA (holds ptb/, wikitext-2/, xsum/, tokenizers/gpt2)}" "${OUT:?set OUT}"
PY=${PYTHON:-python3}
SHA=${GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
R=${RUNS:-/tmp/sum_runs}; rm -rf "$R"; mkdir -p "$R/logs" "$R/pids" "$R/warm" "$OUT"
XSUM=$DATA/xsum/test_subset1000.jsonl
TEXT=$DATA/ptb/ptb.train.txt,$DATA/wikitext-2/wiki.valid.tokens,$DATA/wikitext-2/wiki.test.tokens
PRETRAIN_S=${PRETRAIN_S:-100}; FINETUNE_S=${FINETUNE_S:-50}; STUDENT_S=${STUDENT_S:-75}; DEADLINE_S=${DEADLINE_S:-315}
ARCH=d_model=384,encoder_layers=6,decoder_layers=6,encoder_attention_heads=6,decoder_attention_heads=6,encoder_ffn_dim=1536,decoder_ffn_dim=1536,max_position_embeddings=512
PRE="--batch_size=64 --num_train_steps=4000 --eval_every_steps=250 --learning_rate=5e-4 --warmup_steps=200 --source_max_len=128 --target_max_len=128 --eval_batch_size=64"
FT="--batch_size=32 --num_train_steps=400 --eval_every_steps=40 --learning_rate=1e-4 --warmup_steps=20"
ST="--batch_size=32 --num_train_steps=500 --eval_every_steps=50 --learning_rate=1e-4 --warmup_steps=20"
LEN="--source_max_len=512 --target_max_len=64 --eval_batch_size=50"   # decoding: DQ-BART's XSum defaults
DT=bfloat16
if [ "${SMOKE:-0}" = 1 ]; then   # tiny sizes, no time budgets (a shared CPU is slow), the same plumbing
  S=$R/smoke_data; mkdir -p "$S"
  head -60 "$XSUM" > "$S/xsum.jsonl"; head -200 "$DATA/ptb/ptb.train.txt" > "$S/ptb.txt"; XSUM=$S/xsum.jsonl; TEXT=$S/ptb.txt
  ARCH=d_model=16,encoder_layers=2,decoder_layers=6,encoder_attention_heads=2,decoder_attention_heads=2,encoder_ffn_dim=32,decoder_ffn_dim=32,max_position_embeddings=128
  PRE="--batch_size=4 --num_train_steps=4 --eval_every_steps=2 --source_max_len=32 --target_max_len=32"
  FT="--batch_size=4 --num_train_steps=4 --eval_every_steps=2"; ST="$FT"
  LEN="--source_max_len=64 --target_max_len=24 --max_gen_length=12 --eval_batch_size=4 --num_beams=2"
  PRETRAIN_S=100000; FINETUNE_S=100000; STUDENT_S=100000; DEADLINE_S=${DEADLINE_S_SMOKE:-3600}; DT=float32
fi
TOK="--tokenizer=$DATA/tokenizers/gpt2 --dataset=xsum --data_dir=$XSUM --heldout_fraction=0.1 --split_seed=0"
COMMON="$TOK --compute_dtype=$DT --log_every_steps=50 --checkpoint_every_steps=100000 --jax_cache_dir=$R/jax_cache"
WARM="--time_budget_s=1 --eval_every_steps=1 --eval_examples=1"   # 1 step, 1 eval, one decode batch
STUDENTS=("w4a4_sym|--quant_mode=sym" "w4a4_asym|--quant_mode=asym" "w4a4_6+3|--decoder_layer_map=0,2,5"
          "w4a4_6+1|--decoder_layer_map=5")
printf '{"pretrain_s": %s, "finetune_s": %s, "student_s": %s, "deadline_s": %s, "smoke": %s}\n' \
    "$PRETRAIN_S" "$FINETUNE_S" "$STUDENT_S" "$DEADLINE_S" "${SMOKE:-0}" > "$R/budgets.json"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import jax, flax, optax; print(jax.__version__, flax.__version__, optax.__version__, jax.devices())"
  echo "commit $SHA"; } > "$R/gpu.txt" 2>&1
T0=$(date +%s); DEADLINE=$((T0 + DEADLINE_S))

run() {  # run <name> <flags...>: one experiments.summarize into $R/<name>, killed at the deadline; rc into walls.txt
  local name=$1; shift
  local t1; t1=$(date +%s); local left=$((DEADLINE - t1)) tag=${name//\//_}
  if [ "$left" -lt 5 ]; then echo "$name skipped start=$((t1 - T0))s" >> "$R/walls.txt"; return; fi
  timeout -k 5 "$left" $PY -m experiments.summarize "$@" $COMMON --git_commit="$SHA" --workdir="$R/$name" \
      > "$R/logs/$tag.log" 2>&1 &
  local pid=$!; echo "$pid" > "$R/pids/$tag"; wait "$pid"; local rc=$?; rm -f "$R/pids/$tag"
  echo "$name rc=$rc start=$((t1 - T0))s wall=$(( $(date +%s) - t1 ))s" >> "$R/walls.txt"
}
student_flags() { echo "--bits=w4a4 $LEN $ST --dropout=0.0 --time_budget_s=$STUDENT_S ${1#*|}"; }

# Warm-up (in the background, beside the denoiser): the teacher's and the students' programs into the cache.
( run warm/fp32 --model=bart_base --arch=$ARCH $LEN $FT --dropout=0.1 --time_budget_s=$FINETUNE_S $WARM
  [ -f "$R/warm/STOP" ] && exit
  for s in "${STUDENTS[@]}"; do
    run "warm/${s%%|*}" --teacher="$R/warm/fp32" $(student_flags "$s") $WARM &
  done; wait ) &
WARM_PID=$!

run denoise --objective=denoise --model=bart_base --arch=$ARCH --text_files=$TEXT $PRE --dropout=0.1 \
    --time_budget_s=$PRETRAIN_S
# Fine-tune the denoiser (or, should pretraining have failed, a random init of the same shape: the log says which).
INIT="--model=$R/denoise"; [ -f "$R/denoise/results.json" ] || INIT="--model=bart_base --arch=$ARCH"
echo "fine-tune from: $INIT" >> "$R/gpu.txt"
run fp32 $INIT $LEN $FT --dropout=0.1 --time_budget_s=$FINETUNE_S &
FP=$!
# The students start once the teacher has stopped training (best/ is final then).
while kill -0 $FP 2>/dev/null && ! grep -qE "^summary:|time_budget_s=.* reached" "$R/logs/fp32.log" 2>/dev/null \
      && [ "$(date +%s)" -lt "$DEADLINE" ]; do sleep 1; done
echo "students start at $(( $(date +%s) - T0 ))s" >> "$R/gpu.txt"
touch "$R/warm/STOP"   # a warm-up still running only takes GPU and CPU from the real runs now
for pass in 1 2; do
  for f in "$R"/pids/warm_*; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null && echo "stopped warm-up ${f##*/}" >> "$R/gpu.txt"
  done; sleep 1
done
wait $WARM_PID
for s in "${STUDENTS[@]}"; do
  run "${s%%|*}" --teacher="$R/fp32" $(student_flags "$s") &
done
wait
echo "all runs ended at $(( $(date +%s) - T0 ))s" >> "$R/gpu.txt"
$PY results/scripts/collect_summarization.py --status "$R" > "$R/gpu.json"
cp "$R/gpu.json" "$OUT/gpu.json"
tar -C "$R" --exclude=checkpoints --exclude=smoke_data --exclude=jax_cache --exclude=pids --exclude=STOP \
    -cf "$OUT/summarization_runs.tar" .
echo "done in $(( $(date +%s) - T0 ))s"; cat "$R/gpu.txt" "$R/walls.txt"
if [ "${SMOKE:-0}" = 1 ]; then   # the collector too (needs rouge-score and matplotlib: the CPU machine has them)
  $PY results/scripts/collect_summarization.py "$OUT/summarization_runs.tar" "$R/collected" && ls "$R/collected"
fi
