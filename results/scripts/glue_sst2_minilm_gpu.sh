#!/bin/bash
# Teacher then 4 students (in parallel on the one GPU). Usage: bash results/scripts/glue_sst2_minilm_gpu.sh <git sha>, with .carry_glue/{minilm,SST-2} carried (see results/glue_sst2_minilm.md)
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=.
C=.carry_glue; R=/tmp/runs; mkdir -p $R
COMMON="--task=sst2 --model=$C/minilm --data_dir=$C/SST-2 --git_commit=$1 --log_every_steps=200"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; python3 -c "import jax, flax, optax, orbax.checkpoint as o; print(jax.__version__, flax.__version__, optax.__version__, o.__version__, jax.devices())"; } > $OUT/gpu.txt 2>&1
T0=$(date +%s)
timeout ${TEACHER_S:-180} python3 -m experiments.glue $COMMON --bits=fp32 --eval_every_steps=500 --workdir=$R/fp32 > $OUT/fp32.log 2>&1
echo "teacher rc=$? wall=$(( $(date +%s) - T0 ))s" >> $OUT/gpu.txt
T1=$(date +%s)
for cfg in "w8a8 sym" "w4a8 sym" "w4a4 sym" "w4a4 asym"; do set -- $cfg
  ( timeout ${STUDENT_S:-300} python3 -m experiments.glue $COMMON --bits=$1 --quant_mode=$2 --teacher=$R/fp32 \
      --eval_every_steps=250 --workdir=$R/${1}_$2 ${STUDENT_FLAGS:-} > $OUT/${1}_$2.log 2>&1
    echo "$1 $2 rc=$? wall=$(( $(date +%s) - T1 ))s" >> $OUT/gpu.txt ) &
done
wait
python3 results/scripts/glue_collect.py $R > $OUT/summary.json
