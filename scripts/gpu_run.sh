#!/usr/bin/env bash
# All GPU work of one session in one bounded pass (see ../shared/GPU.md and issue 10).
#
#   scripts/gpu_run.sh OUTDIR          from anywhere; runs from this source tree (PYTHONPATH)
#   RIDGELINE_DEVICE=cpu scripts/gpu_run.sh OUTDIR     the CPU smoke path (automatic without a GPU)
#
# Steps, in this order, each under `timeout` (limit = min(its cap, time left of the whole)):
#   env        versions, nvidia-smi / rocm-smi (tolerated when absent), `ridgeline devices`
#   profile    the full profile FIRST (on the CPU: the quick profile)
#   gpu-tests  pytest -m gpu (skips cleanly without a GPU)
#   quick      a timed `profile --quick` (GPU only: on the CPU the profile already was quick)
#   validate   llama-3.1-8b, bf16 then fp8 (CPU: the tiny model, bf16 only)
#   bench      benchmarks/bench_gemv.py and bench_matmul.py (the large-shape matmul sweep);
#              neither re-runs a profile: bench_matmul reads $RIDGELINE_PROFILE
#   bench-hbm  benchmarks/bench_hbm.py, last, on its own cap; skipped unless asked for: today it
#              re-runs an hbm profile (RIDGELINE_SKIP= runs it)
#   targets    scripts/gpu_targets.py: the table of every target, printed LAST
# Work goes to a scratch folder; after every step the log and results.tgz (all of it so far)
# are copied into OUTDIR, which never holds more than 8 files: log.txt, results.tgz,
# profile.json, quick-profile.json, summary.txt, targets.json.
# No GNU time, no bc: steps are timed with bash's $SECONDS.
#
# Environment (all optional):
#   RIDGELINE_DEVICE   cuda:0 | cpu   (default: cuda:0 when torch sees a GPU, else cpu)
#   RIDGELINE_PROBES   probes of the profile steps, comma-separated (default: all)
#   RIDGELINE_SKIP     steps to skip, comma-separated, e.g. validate,bench (default: bench-hbm)
#   RIDGELINE_TOTAL_S  the whole script's budget in seconds (default 540; CPU smoke path 170)
#   RIDGELINE_SCRATCH  scratch folder (default: a new mktemp -d)
#   RIDGELINE_SWEEP_S  seconds of the large-shape matmul sweep (default 45)
# Exported to the benchmarks: RIDGELINE_PROFILE (the profile this run made) and
# RIDGELINE_BENCH_DIR (where they write, e.g. matmul_sweep.json).
# Exit status: 0 when every step that ran succeeded, 1 otherwise, 2 on a usage error.
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: scripts/gpu_run.sh OUTDIR" >&2
  exit 2
fi
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
export PYTHONUNBUFFERED=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
PY=python3
TOTAL_S=${RIDGELINE_TOTAL_S:-540}   # the CPU smoke path lowers the default (see main)
RESERVE_S=15   # kept back for the targets table and the last archive
SCRATCH=${RIDGELINE_SCRATCH:-$(mktemp -d "${TMPDIR:-/tmp}/ridgeline-run.XXXXXX")}
mkdir -p "$SCRATCH" || exit 2
SKIP=",${RIDGELINE_SKIP-bench-hbm},"   # set but empty: skip nothing
PROBES=${RIDGELINE_PROBES:-}
export RIDGELINE_PROFILE="$SCRATCH/profile/profile.json" RIDGELINE_BENCH_DIR="$SCRATCH/bench"
STEPS="$SCRATCH/steps.tsv"
: > "$STEPS"

# bounded LIMIT CMD...: run CMD for at most LIMIT seconds. SIGINT first, so a profile keeps
# what it measured (Ctrl-C semantics), SIGKILL 10 s later. Exit 124 when the limit hit.
bounded() {
  local limit=$1
  shift
  if command -v timeout > /dev/null; then
    timeout -s INT -k 10 "$limit" "$@"
  else
    "$PY" - "$limit" "$@" <<'PY'
import signal, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
try:
    sys.exit(proc.wait(timeout=float(sys.argv[1])))
except subprocess.TimeoutExpired:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    sys.exit(124)
PY
  fi
}

# archive the scratch folder into OUTDIR/results.tgz (written aside, then renamed into place)
save() {
  cp -f "$OUT/log.txt" "$SCRATCH/log.txt" 2> /dev/null
  local tmp="$OUT/.results.tgz.tmp"
  if command -v tar > /dev/null; then
    tar czf "$tmp" -C "$(dirname "$SCRATCH")" "$(basename "$SCRATCH")" 2> /dev/null
  else
    "$PY" -c "import sys, tarfile; t = tarfile.open(sys.argv[1], 'w:gz'); \
t.add(sys.argv[2], arcname=sys.argv[3]); t.close()" "$tmp" "$SCRATCH" "$(basename "$SCRATCH")"
  fi && mv -f "$tmp" "$OUT/results.tgz"
  rm -f "$tmp"
}

skipped() { [[ "$SKIP" == *",$1,"* ]]; }

# step NAME CAP_S CMD...: one bounded step, its result in steps.tsv, then save
FAILED=0
step() {
  local name=$1 cap=$2
  shift 2
  if skipped "$name"; then
    echo "== $name: skipped (RIDGELINE_SKIP)"
    return 0
  fi
  local left=$(( TOTAL_S - SECONDS - RESERVE_S ))
  local limit=$(( cap < left ? cap : left ))
  if (( limit < 5 )); then
    echo "== $name: not run, ${left}s left of the ${TOTAL_S}s budget"
    printf '%s\tnot run\t0\n' "$name" >> "$STEPS"
    return 0
  fi
  echo "== $name (limit ${limit}s, ${SECONDS}s elapsed): $*"
  local t0=$SECONDS rc result
  bounded "$limit" "$@"
  rc=$?
  case $rc in
    0) result=ok ;;
    124|137) result="timed out after ${limit}s"; FAILED=1 ;;
    *) result="failed (exit $rc)"; FAILED=1 ;;
  esac
  echo "== $name: $result in $(( SECONDS - t0 ))s"
  printf '%s\t%s\t%s\n' "$name" "$result" "$(( SECONDS - t0 ))" >> "$STEPS"
  save
}

env_report() {
  date -u
  echo "scratch: $SCRATCH"
  "$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0]); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'hip', \
getattr(torch.version, 'hip', None)); print('triton', triton.__version__)"
  if command -v nvidia-smi > /dev/null; then nvidia-smi
  elif command -v rocm-smi > /dev/null; then rocm-smi
  else echo "no nvidia-smi or rocm-smi here"
  fi
  "$PY" -m ridgeline devices
}

pick_device() {
  if [ -n "${RIDGELINE_DEVICE:-}" ]; then echo "$RIDGELINE_DEVICE"; return; fi
  if bounded 120 "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" \
      > /dev/null 2>&1; then
    echo cuda:0
  else
    echo cpu
  fi
}

main() {
  local dev probes=() quick_flag=() profile_cap=240
  local validate_model=(--model llama-3.1-8b --batch 1,8,32,128 --context 1024,4096,8192)
  dev=$(pick_device)
  [ -n "$PROBES" ] && probes=(--probes "$PROBES")
  if [ "$dev" = cpu ]; then
    # the smoke path: the same steps, CPU-sized; the GPU-only ones say so
    quick_flag=(--quick)
    validate_model=(--model tiny --batch 1,4 --context 128 --prefill 64 --rep-ms 20)
    SKIP="$SKIP,quick,validate-fp8,bench-hbm,"
    TOTAL_S=${RIDGELINE_TOTAL_S:-170}   # a rehearsal: under 3 minutes on a 2-core CI machine
    profile_cap=100                     # and the steps after the profile still run
    echo "== no GPU: CPU smoke path (quick profile; no timed quick step, fp8 or bench-hbm)"
  fi
  echo "== ridgeline GPU run: device $dev, budget ${TOTAL_S}s, output $OUT"
  export -f env_report
  export PY SCRATCH
  step env 90 bash -c env_report

  step profile "$profile_cap" "$PY" -m ridgeline profile --device "$dev" \
    ${quick_flag[@]+"${quick_flag[@]}"} ${probes[@]+"${probes[@]}"} -o "$SCRATCH/profile"
  [ -f "$SCRATCH/profile/profile.json" ] && cp -f "$SCRATCH/profile/profile.json" \
    "$OUT/profile.json"

  step gpu-tests 120 "$PY" -m pytest -m gpu -q -p no:cacheprovider \
    --continue-on-collection-errors tests

  step quick 60 "$PY" -m ridgeline profile --device "$dev" --quick \
    ${probes[@]+"${probes[@]}"} --no-report -o "$SCRATCH/quick"
  [ -f "$SCRATCH/quick/profile.json" ] && cp -f "$SCRATCH/quick/profile.json" \
    "$OUT/quick-profile.json"

  if ! skipped validate; then
    step validate-bf16 100 "$PY" -m ridgeline validate --device "$dev" --weights bf16 \
      "${validate_model[@]}" --profile "$SCRATCH/profile/profile.json" -o "$SCRATCH/validate-bf16"
    step validate-fp8 100 "$PY" -m ridgeline validate --device "$dev" --weights fp8 \
      "${validate_model[@]}" --profile "$SCRATCH/profile/profile.json" -o "$SCRATCH/validate-fp8"
  else
    echo "== validate: skipped (RIDGELINE_SKIP)"
  fi

  step bench 120 "$PY" -m pytest benchmarks/bench_gemv.py benchmarks/bench_matmul.py \
    --benchmark-only -q -s -p no:cacheprovider
  step bench-hbm 60 "$PY" -m pytest benchmarks/bench_hbm.py --benchmark-only -q -s \
    -p no:cacheprovider

  echo "== steps (name, result, seconds):"
  cat "$STEPS"
  "$PY" scripts/gpu_targets.py --profile "$SCRATCH/profile/profile.json" \
    --quick-profile "$SCRATCH/quick/profile.json" --steps "$STEPS" \
    --validate "bf16=$SCRATCH/validate-bf16/validation.json" \
    --validate "fp8=$SCRATCH/validate-fp8/validation.json" \
    --matmul-sweep "$SCRATCH/bench/matmul_sweep.json" \
    --json "$SCRATCH/targets.json" > "$SCRATCH/summary.txt" 2>&1 || FAILED=1
  cp -f "$SCRATCH/summary.txt" "$OUT/summary.txt"
  [ -f "$SCRATCH/targets.json" ] && cp -f "$SCRATCH/targets.json" "$OUT/targets.json"
  local failed="" name result _
  while IFS=$'\t' read -r name result _; do
    [ "$result" = ok ] || [ "$result" = "not run" ] || failed+="$name "
  done < "$STEPS"
  echo "== done in ${SECONDS}s; steps failed or timed out: ${failed:-none}"
  echo "== in $OUT: $(ls "$OUT" | tr '\n' ' ')"
  save
  cat "$SCRATCH/summary.txt"   # the table is the last thing printed
  return "$FAILED"
}

main 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
