#!/usr/bin/env python3
"""PyTorch's side of the side-by-side scoring benchmark (issue 19).

Times LeNet-300-100 (784-300-100-10, ReLU) over the 10,000 MNIST test rows in batches, as float32 and after
torch.quantization.quantize_dynamic (int8 Linear), on the quantized engine given (oneDNN by default), with the
thread count given. Prints one JSON object per mode on stdout: {"path", "rowsPerSecond" (median), "best", "runs"}.
The weights are random: scoring time does not depend on their values, and the C# side's network has the same shape.
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import torch


def load_images(path):
    with open(path, "rb") as f:
        data = f.read()
    magic, count, rows, cols = np.frombuffer(data[:16], dtype=">u4")
    if magic != 2051 or len(data) != 16 + int(count) * int(rows) * int(cols):
        raise SystemExit(f"{path}: not an IDX image file of the declared size")
    pixels = np.frombuffer(data[16:], dtype=np.uint8).reshape(int(count), int(rows) * int(cols))
    return torch.from_numpy(pixels.astype(np.float32) / 255.0)


def time_model(model, x, batch, repeats, warmup, settle_ms):
    runs = []
    with torch.inference_mode():
        for _ in range(warmup):
            for start in range(0, x.shape[0], batch):
                model(x[start:start + batch])
        time.sleep(settle_ms / 1000.0)
        for _ in range(repeats):
            t0 = time.perf_counter()
            for start in range(0, x.shape[0], batch):
                model(x[start:start + batch]).argmax(dim=1)
            runs.append(x.shape[0] / (time.perf_counter() - t0))
    return runs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", default=os.path.expanduser("~/.cache/mlnet-compression/mnist/t10k-images-idx3-ubyte"))
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--engine", default="onednn")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--float-repeats", type=int, default=None, help="timed passes of float32 (default: --repeats)")
    parser.add_argument("--settle-ms", type=int, default=0, help="pause after the warm-up, before the timed passes")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes over the rows first")
    parser.add_argument("--hidden", default="300,100", help="hidden layer sizes, comma separated")
    args = parser.parse_args()

    torch.manual_seed(1)
    torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = args.engine
    x = load_images(args.images)
    sizes = [x.shape[1]] + [int(h) for h in args.hidden.split(",")]
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(sizes[-1], 10))
    float32 = torch.nn.Sequential(*layers).eval()
    int8 = torch.quantization.quantize_dynamic(float32, {torch.nn.Linear}, dtype=torch.qint8)
    for name, model in (("pytorch-float32", float32), ("pytorch-int8-dynamic", int8)):
        repeats = args.float_repeats if name == "pytorch-float32" and args.float_repeats else args.repeats
        runs = time_model(model, x, args.batch, repeats, args.warmup, args.settle_ms)
        print(json.dumps({"path": name, "rowsPerSecond": statistics.median(runs), "best": max(runs), "runs": len(runs),
                          "torch": torch.__version__, "engine": args.engine, "threads": args.threads, "batch": args.batch}))


if __name__ == "__main__":
    main()
