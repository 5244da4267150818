#!/usr/bin/env bash
# Side-by-side CPU scoring benchmark (issue 19; not part of CI), one command, about 2-4 minutes:
# ours (ScoringLevers, `--scoring-levers`): LeNet-300-100 trained one epoch, quantized int8 dynamic (per-row scales, and per-batch: ActivationScaleScope.PerBatch) / int8 static / int4,
# the accuracy of every mode on the 10,000 test rows, then interleaved rounds of the bare ONNX Runtime session and of the
# batched `model.Transform` per mode, ML.NET's ApplyOnnxModel on the float32 bytes, and in every round one
# timed pass of PyTorch's float32 and quantize_dynamic int8 (pytorch_scoring.py with Debian's python3-torch, installed
# with apt-get when missing; the same 784-300-100-10 shape, the same 10,000 MNIST test rows, batches of 1,024), so both
# sides see the same load (each path: a 200 ms settle pause, then 3 passes, the fastest counts; PyTorch the same); then prints one table (medians) with the ratios to our float32 and to PyTorch's int8 dynamic, plus batched-vs-ApplyOnnxModel.
# Usage: bash tests/MLNet.Compression.Benchmarks/SideBySide/side-by-side.sh [--quick] [--levers]
#   --quick: 3 rounds instead of 15; --levers: also time the session options and graph variants (adds about 2 minutes).
# Needs: MNIST in ~/.cache/mlnet-compression/mnist (the main job or the tests put it there). Run it on an otherwise idle
# machine: both sides use every core.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
py=/usr/bin/python3
if ! "$py" -c 'import torch' 2>/dev/null; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq python3-torch python3-numpy
fi
rounds=15; levers=""
for a in "$@"; do
  case "$a" in
    --quick) rounds=3 ;;
    --levers) levers="--levers" ;;
    *) echo "unknown argument $a" >&2; exit 2 ;;
  esac
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "// load average at start: $(cat /proc/loadavg) ($(nproc) cores)"
dotnet build -c Release "$root/tests/MLNet.Compression.Benchmarks" -v q -nologo > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
dotnet "$root/tests/MLNet.Compression.Benchmarks/bin/Release/net10.0/MLNet.Compression.Benchmarks.dll" --scoring-levers --rounds "$rounds" $levers --pytorch "$here/pytorch_scoring.py" \
  | tee "$work/ours.log" | grep -v '^#json\|^#accuracy'
echo "// load average at end: $(cat /proc/loadavg)"
"$py" - "$work/ours.log" <<'PY'
import json, sys
ours, accuracy = {}, {}
for line in open(sys.argv[1]):
    if line.startswith("#json "):
        j = json.loads(line[6:])
        ours[j["path"]] = j["rowsPerSecond"]
    elif line.startswith("#accuracy "):
        j = json.loads(line[10:])
        accuracy[j["mode"]] = j["accuracy"]
torch = {k: v for k, v in ours.items() if k.startswith("pytorch")}
rows = [(f"ours {m}, batched Transform", ours[f"ours {m} Transform"]) for m in ("float32", "int8-dynamic", "int8-dynamic-per-batch", "int8-static", "int4")]
rows += [(f"ours {m}, bare ONNX Runtime session", ours[f"ours {m} session"]) for m in ("float32", "int8-dynamic", "int8-dynamic-per-batch", "int8-static", "int4")]
rows += [("PyTorch float32", torch["pytorch-float32"]), ("PyTorch int8 dynamic (quantize_dynamic)", torch["pytorch-int8-dynamic"])]
base, pt = ours["ours float32 Transform"], torch["pytorch-int8-dynamic"]
print()
print("| path (10,000 MNIST test rows, batches of 1,024) | rows/s | vs ours float32 (Transform) | vs PyTorch int8 dynamic |")
print("| --- | ---: | ---: | ---: |")
for name, rps in rows:
    print(f"| {name} | {rps:,.0f} | {rps / base:.2f} | {rps / pt:.2f} |")
apply = ours["ours float32 ApplyOnnxModel"]
print()
print(f"batched Transform vs ApplyOnnxModel (float32, same ONNX bytes): {base:,.0f} vs {apply:,.0f} rows/s = {base / apply:.2f}x")
print("accuracy on the 10,000 test rows: " + ", ".join(f"{m} {a:.4f} ({(a - accuracy['float32']) * 100:+.2f} points)" for m, a in accuracy.items()))
PY
