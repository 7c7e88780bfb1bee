#!/usr/bin/env bash
# One prepared accelerator check: install the carried wheels, then the env + render sweep up to
# B=16384, the fused step of the small config at 2048 trajectories (bf16), the fused/unfused ratio
# and the tests marked `accelerator`. Each stage runs under its own time limit (8 minutes in all,
# compiles included, plus the install); the benchmarks print one JSON line per setting as it
# ends, so a stage cut by its limit keeps the rows it finished. Seven files come back (the device
# tool returns at most 8): machine.json, stages.jsonl, one NAME.jsonl per benchmark stage, and
# stderr.txt with every stage's stderr under a header (the tests' report goes there too).
# QUICK=1 runs every stage at tiny settings on a CPU. Run on an H200 on 2026-11-30 (BENCHMARKS.md):
# at these settings the env, train and ratio stages did not finish within their limits (compile and
# warm-up alone take most of them), so no GPU figure came back yet; give a stage more time with
# STAGES= and a longer run.
#
#   OUT=/tmp/out bash benchmarks/device_check.sh            # on the lent GPU (the device tool's $OUT)
#   QUICK=1 OUT=/tmp/out bash benchmarks/device_check.sh    # a CPU smoke run of the same stages
#   STAGES="train ratio" OUT=... bash benchmarks/device_check.sh   # some stages only (a rerun)
#
# The device image has jax, flax, optax, orbax and absl but not mujoco, mujoco-mjx, ml-collections
# or brax: carry them as wheels in .whl/ (../shared/PLATFORM.md lists the set; the device tool's
# README gives the `pip download` line). Without .whl/ the current Python environment is used.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
PY=${PY:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "wheel install failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
fi
unset JAX_COMPILATION_CACHE_DIR   # compile times measured cold
$PY - <<'EOF' > "$OUT/machine.json" 2>> "$OUT/stderr.txt"
import json, jax
print(json.dumps({"devices": [str(d) for d in jax.devices()], "jax": jax.__version__}))
EOF

if [ "${QUICK:-0}" = 1 ]; then  # tiny settings, 4x the time limits: the script's plumbing on a CPU
  BIG="(8,)"; SMALL_VARIANT=tiny; PROMPTS=2; RATIO_PROMPTS=1; REPEATS=1; IMAGE=32; SCALE=4
  TESTS="--collect-only"   # selects the accelerator tests without running them (minutes on a CPU)
else
  BIG="(4096,16384)"; SMALL_VARIANT=small; PROMPTS=${PROMPTS:-128}; RATIO_PROMPTS=${RATIO_PROMPTS:-8}
  REPEATS=${REPEATS:-3}; IMAGE=128; SCALE=1
  TESTS=""
fi
status=0
STAGES=${STAGES:-env train ratio tests}   # a rerun can take fewer, e.g. STAGES="train ratio"
stage() {  # stage NAME SECONDS CMD...: stdout -> $OUT/NAME.jsonl, stderr -> $OUT/stderr.txt
  local name=$1 limit=$(($2 * SCALE)); shift 2
  case " $STAGES " in *" $name "*) ;; *) return ;; esac
  local t0=$SECONDS
  echo "=== stage $name: $*" >> "$OUT/stderr.txt"
  timeout "$limit" "$@" > "$OUT/$name.jsonl" 2>> "$OUT/stderr.txt"
  local rc=$?
  echo "{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" >> "$OUT/stages.jsonl"
  [ $rc = 0 ] || status=1
}
BENCH="$PY -m launch.benchmark --config=configs/benchmark.py"
stage env 150 $BENCH:what=env,env=libero_bowl_on_plate "--config.num_envs=$BIG" \
  --config.image_size=$IMAGE --config.repeats=$REPEATS
stage train 140 $BENCH:what=train "--config.train_envs=('libero_bowl_on_plate',)" \
  --config.train_variant=$SMALL_VARIANT --config.train_num_prompts=$PROMPTS \
  --config.train_dtype=bfloat16 --config.train_chunk_size=0 --config.train_repeats=$REPEATS
stage ratio 160 $BENCH:what=fused_vs_unfused,env=libero_bowl_on_plate \
  --config.ratio_variant=$SMALL_VARIANT --config.ratio_num_prompts=$RATIO_PROMPTS \
  --config.train_dtype=bfloat16 --config.ratio_repeats=2
# the tests last: the figures above are what the lent minutes are for; the report goes to stderr.txt
stage tests 40 $PY -m pytest -v -m accelerator -p no:cacheprovider $TESTS tests
[ -f "$OUT/tests.jsonl" ] && { cat "$OUT/tests.jsonl" >> "$OUT/stderr.txt"; rm -f "$OUT/tests.jsonl"; }
tail -n 5 "$OUT/stderr.txt"
cat "$OUT"/*.jsonl
exit $status
