#!/usr/bin/env python3
"""onnxopt quantize next to onnxruntime's quantize_static (QDQ, per-channel), same data.

    python benches/compare_quant.py ONNXOPT_BINARY MODEL [MODEL...]

For each model: N calibration samples and M held-out eval samples are drawn (seeded; uniform
[-1, 1), symbolic dims set to 1) and saved as .npz; both tools calibrate on the same samples
(MinMax). Reported: file size, onnxruntime 1-thread median latency of float / ORT-Q / onnxopt,
tract latency of float / onnxopt (`onnxopt bench`), and worst cosine and top-1 agreement of each
quantized model against float on the eval samples in onnxruntime.

Random inputs are a stand-in for real data (none ships with these models): they exercise every
layer but calibrate worse than real images would; both tools see the same inputs.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

N_CALIB, N_EVAL = 16, 8


def shapes(path):
    m = onnx.load(path, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    out = {}
    for i in m.graph.input:
        if i.name in inits:
            continue
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in i.type.tensor_type.shape.dim]
        out[i.name] = dims
    return out


def draw(path, n, seed):
    rng = np.random.default_rng(seed)
    return [{k: rng.uniform(-1, 1, v).astype(np.float32) for k, v in shapes(path).items()} for _ in range(n)]


class Reader(CalibrationDataReader):
    def __init__(self, samples):
        self.it = iter(samples)

    def get_next(self):
        return next(self.it, None)


def session(path, threads=1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def latency(path, feed, runs=20):
    s = session(path)
    for _ in range(3):
        s.run(None, feed)
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        s.run(None, feed)
        t.append(time.perf_counter() - t0)
    return float(np.median(t) * 1e3)


def accuracy(float_path, q_path, samples):
    f, q = session(float_path), session(q_path)
    worst, agree, rows = 1.0, 0, 0
    for s in samples:
        for a, b in zip(f.run(None, s), q.run(None, s)):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            worst = min(worst, float(a.ravel() @ b.ravel() / (na * nb + 1e-30)) if na and nb else 1.0)
            if a.ndim == 2 and a.shape[1] >= 2:
                agree += int((a.argmax(1) == b.argmax(1)).sum())
                rows += a.shape[0]
    return worst, (agree / rows if rows else None)


def tract_ms(binary, path, shape_flags):
    r = subprocess.run([binary, "bench", path, "--runs", "10", "--warmup", "2", "--json", *shape_flags], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)["models"][0]["median_ms"]


def main():
    binary, models = sys.argv[1], sys.argv[2:]
    print(f"{'model':26} {'variant':9} {'bytes':>10} {'ORT ms':>8} {'tract ms':>9} {'cosine':>9} {'top1':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for m in models:
            name = os.path.basename(m)
            calib, evals = draw(m, N_CALIB, 1), draw(m, N_EVAL, 2)
            npz = os.path.join(tmp, "calib.npz")
            np.savez(npz, **{k: np.stack([s[k] for s in calib]) for k in calib[0]})
            shape_flags = [f for k, v in shapes(m).items() for f in ("--input-shape", f"{k}={','.join(map(str, v))}")]
            ours = os.path.join(tmp, "ours_" + name)
            r = subprocess.run([binary, "quantize", m, "-o", ours, "--calibration", npz, *shape_flags], capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{name:26} onnxopt failed: {r.stderr.strip()[:80]}")
                continue
            ortq = os.path.join(tmp, "ortq_" + name)
            try:
                quantize_static(m, ortq, Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
            except Exception as e:  # noqa: BLE001
                print(f"{name:26} ORT quantize_static failed: {str(e)[:80]}")
                ortq = None
            feed = evals[0]
            rows = [("float", m, None), ("ORT-Q", ortq, None), ("onnxopt", ours, None)]
            for label, path, _ in rows:
                if path is None:
                    continue
                try:
                    cos, top1 = (1.0, 1.0) if label == "float" else accuracy(m, path, evals)
                except Exception as e:  # noqa: BLE001 - e.g. ORT's own per-channel output on opset < 13
                    print(f"{'':26} {label:9} {os.path.getsize(path):>10} does not load in onnxruntime: {str(e).splitlines()[0][-70:]}")
                    continue
                tms = tract_ms(binary, path, shape_flags) if label != "ORT-Q" else None
                print(f"{name if label == 'float' else '':26} {label:9} {os.path.getsize(path):>10} {latency(path, feed):>8.2f} "
                      f"{(f'{tms:.1f}' if tms else '-'):>9} {cos:>9.5f} {(f'{top1:.3f}' if top1 is not None else '-'):>6}")


if __name__ == "__main__":
    main()
