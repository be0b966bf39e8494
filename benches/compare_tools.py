#!/usr/bin/env python3
"""onnxopt next to onnxslim and onnx-simplifier (onnxsim), side by side in one run.

    python benches/compare_tools.py ONNXOPT_BINARY MODEL_OR_DIR...

Needs `onnx`, `onnxruntime`, `onnxslim` and `onnxsim` (pip, in a venv). For every model, each tool
is run as a command line (so Python start-up counts for the Python tools, as it does for users);
the table shows top-level node count, file size (model + external data), wall time, onnxslim's time
divided by onnxopt's, and the largest relative output difference from the original in onnxruntime on
seeded random inputs (symbolic dims set to 1, `image_width` to 128).

onnxopt runs twice: `--no-check` (optimisation alone, what the other tools do) and with its default
tract equivalence check (`+check`).
"""
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

NP = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def size_of(path):
    total = os.path.getsize(path)
    data = path + ".data"
    if os.path.exists(data):
        total += os.path.getsize(data)
    return total


def nodes_of(path):
    return len(onnx.load(path, load_external_data=False).graph.node)


def dim(d, name):
    if isinstance(d, int) and d > 0:
        return d
    return 128 if d == "image_width" else 1


def outputs(path, seed=0):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in sess.get_inputs():
        shape = [dim(d, str(d)) for d in i.shape]
        dt = NP.get(i.type, np.float32)
        feeds[i.name] = rng.uniform(-1, 1, shape).astype(dt) if dt == np.float32 else rng.integers(0, 4, shape).astype(dt)
    return sess.run(None, feeds)


def rel_diff(ref, got):
    worst = 0.0
    for a, b in zip(ref, got):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            return float("inf")
        denom = max(np.abs(a).max(initial=0.0), 1e-12)
        worst = max(worst, float(np.abs(a - b).max(initial=0.0) / denom))
    return worst


def timed(cmd):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - t0, r


def main():
    binary, targets = sys.argv[1], sys.argv[2:]
    models = []
    for t in targets:
        if os.path.isdir(t):
            models += sorted(os.path.join(t, f) for f in os.listdir(t) if f.endswith(".onnx"))
        else:
            models.append(t)
    bindir = os.path.dirname(sys.executable)
    tools = {
        "onnxopt": lambda i, o: [binary, "optimize", i, "-o", o, "--no-check"],
        "onnxopt+check": lambda i, o: [binary, "optimize", i, "-o", o],
        "onnxslim": lambda i, o: [os.path.join(bindir, "onnxslim"), i, o],
        "onnxsim": lambda i, o: [os.path.join(bindir, "onnxsim"), i, o],
    }
    print(f"{'model':28} {'tool':14} {'nodes':>7} {'bytes':>10} {'seconds':>8} {'slim/opt':>8} {'max rel diff':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for m in models:
            name = os.path.basename(m)
            try:
                ref = outputs(m)
            except Exception as e:  # noqa: BLE001
                print(f"{name:28} skipped: onnxruntime cannot run the original ({str(e).splitlines()[0][:60]})")
                continue
            print(f"{name:28} {'original':14} {nodes_of(m):>7} {size_of(m):>10}")
            times = {}
            for tool, cmd in tools.items():
                out = os.path.join(tmp, f"{tool}_{name}")
                secs, r = timed(cmd(m, out))
                if r.returncode != 0 or not os.path.exists(out):
                    msg = (r.stderr.strip().splitlines() or ["?"])[-1][:70]
                    print(f"{'':28} {tool:14} failed: {msg}")
                    continue
                times[tool] = secs
                try:
                    diff = f"{rel_diff(ref, outputs(out)):.2e}"
                except Exception as e:  # noqa: BLE001
                    diff = f"ORT fails: {str(e).splitlines()[0][:40]}"
                ratio = f"{times['onnxslim'] / times['onnxopt']:.1f}x" if tool == "onnxslim" and "onnxopt" in times else ""
                print(f"{'':28} {tool:14} {nodes_of(out):>7} {size_of(out):>10} {secs:>8.2f} {ratio:>8} {diff:>12}")


if __name__ == "__main__":
    main()
