#!/usr/bin/env bash
# All GPU work in one pass (see ../shared/GPU.md): versions, gpu tests, a full profile,
# the benchmarks, validation; full outputs under OUTDIR, a short summary table last.
#   scripts/gpu_run.sh OUTDIR            (from the repository root; runs from the source tree)
#   RIDGELINE_DEVICE=cpu scripts/gpu_run.sh /tmp/dry-run   (rehearse the same steps on the CPU)
set -uo pipefail
OUT=${1:?usage: scripts/gpu_run.sh OUTDIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
DEV=${RIDGELINE_DEVICE:-cuda:0}
QUICK=${RIDGELINE_QUICK:-}
py=python3
{
  echo "== versions"; date -u; $py -c "import sys, torch, triton; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'hip', getattr(torch.version, 'hip', None)); print('triton', triton.__version__)"
  nvidia-smi || rocm-smi || true
  echo "== devices"; $py -m ridgeline devices
  echo "== gpu tests"; $py -m pytest -m gpu -q -p no:cacheprovider tests || echo "gpu tests FAILED"
  echo "== profile"; /usr/bin/time -v $py -m ridgeline profile --device "$DEV" $QUICK -o "$OUT/profile" 2>&1 | grep -v "^\s*\(Page\|Minor\|Major\|Vol\|Invol\|Swaps\|File\|Socket\|Signals\|Average\|Exit\)" || echo "profile FAILED"
  echo "== profile --quick (timing)"; start=$(date +%s.%N); $py -m ridgeline profile --device "$DEV" --quick --probes hbm,matmul --no-report -o "$OUT/quick" > "$OUT/quick.log" 2>&1; echo "quick hbm+matmul wall s: $(echo "$(date +%s.%N) - $start" | bc)"
  echo "== benchmarks"; $py -m pytest benchmarks --benchmark-only -q -s -p no:cacheprovider || echo "benchmarks FAILED"
  echo "== validate"; $py -m ridgeline validate --device "$DEV" --model llama-3.1-8b --weights bf16 --batch 1,8,32,128 --context 1024,4096,8192 --profile "$OUT/profile/profile.json" -o "$OUT/validate-bf16" || echo "validate bf16 FAILED"
  $py -m ridgeline validate --device "$DEV" --model llama-3.1-8b --weights fp8 --batch 1,8,32,128 --context 1024,4096,8192 --profile "$OUT/profile/profile.json" -o "$OUT/validate-fp8" || echo "validate fp8 FAILED"
} 2>&1 | tee "$OUT/log.txt"
tar czf "$OUT/results.tgz" -C "$OUT" profile validate-bf16 validate-fp8 quick 2>/dev/null || true
echo "== summary"
$py - "$OUT/profile/profile.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
c, d = p["ceilings"], p.get("datasheet") or {}
print(f"{'ceiling':24} {'measured':>12} {'datasheet':>10}")
for k, v in c["memory_bandwidth_GBps"].items():
    print(f"{k + ' GB/s':24} {v:12.0f} {d.get('memory_bandwidth_GBps') or 0:10.0f}")
for k, v in c["matmul_TFLOPS"].items():
    print(f"{k + ' TFLOP/s':24} {v:12.1f} {(d.get('matmul_TFLOPS') or {}).get(k) or 0:10.1f}")
for k, v in ((p.get("model") or {}).get("fit_error") or {}).items():
    if isinstance(v, dict): print(f"fit error {k}: median {v.get('median')}, worst {v.get('worst')}")
PY
