#!/usr/bin/env bash
# Side-by-side CPU scoring benchmark (not part of CI): our batched Transform (float32, int8 dynamic, int8 static, int4)
# from BenchmarkDotNet's QuantizedScoringBenchmarks, then PyTorch's float32 and quantize_dynamic int8 (Debian's
# python3-torch) on the same network shape (784-300-100-10), the same 10,000 MNIST test rows and the same batch
# size (1,024), printed as one table with the ratios to our float32.
# Usage: bash tests/MLNet.Compression.Benchmarks/SideBySide/side-by-side.sh [--quick]
# Needs: MNIST in ~/.cache/mlnet-compression/mnist (the main job or the tests put it there); apt (root or sudo) the
# first time, to install python3-torch. Run it on an otherwise idle machine: both sides use every core.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
py=/usr/bin/python3
if ! "$py" -c 'import torch' 2>/dev/null; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq python3-torch python3-numpy
fi
quick=""; [ "${1:-}" = "--quick" ] && quick="--quick"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && dotnet run -c Release --project "$root/tests/MLNet.Compression.Benchmarks" -- \
  --filter '*QuantizedScoringBenchmarks*' --exporters csv $quick) | tee "$work/ours.log" | grep -E '^// |Load average' || true
csv=$(ls "$work"/BenchmarkDotNet.Artifacts/results/*QuantizedScoringBenchmarks-report.csv)
repeats=15; [ -n "$quick" ] && repeats=3
"$py" "$here/pytorch_scoring.py" --batch 1024 --threads "$(nproc)" --repeats "$repeats" > "$work/pytorch.jsonl"
"$py" - "$csv" "$work/pytorch.jsonl" <<'PY'
import csv, json, sys
def seconds(text):
    value, unit = text.replace(",", "").split()
    return float(value) * {"ns": 1e-9, "us": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0}[unit]
rows = {}
with open(sys.argv[1], newline="") as f:
    for r in csv.DictReader(f):
        rows["ours-" + r["Method"]] = 10_000 / seconds(r["Median"])
with open(sys.argv[2]) as f:
    for line in f:
        j = json.loads(line)
        rows[j["path"]] = j["rowsPerSecond"]
base = rows.get("ours-Float32")
print()
print("| path | rows/s (median) | vs ours float32 | vs PyTorch int8 dynamic |")
print("| --- | ---: | ---: | ---: |")
for name, rps in rows.items():
    print(f"| {name} | {rps:,.0f} | {rps / base:.2f} | {rps / rows['pytorch-int8-dynamic']:.2f} |")
PY
