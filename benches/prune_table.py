#!/usr/bin/env python3
"""What `onnxopt prune` buys and costs on a model, for every criterion, with and without
compensation. Standard library only; everything is measured through the onnxopt CLI.

    python3 benches/prune_table.py ONNXOPT_BINARY MODEL [--ratio 0.3] [--input-shape NAME=DIMS]

Calibration: 8 seeded random samples (seed 1); held-out evaluation: 8 other ones (seed 2). Random
inputs stand in for real data (none ships with the cached models): they rank channels worse than
images would, and cosines are lower than a real calibration set would give.

Prints parameters and MACs before/after (l1 choice), tract latency from `onnxopt bench` of the
pruned model against the original and against the losslessly optimized original, and the mean /
worst output cosine against the original on the held-out samples for each criterion, with
compensation (the default) and without, plus --refit for l1.
"""
import json
import os
import re
import subprocess
import sys
import tempfile


def sh(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def cosines(binary, a, b, shape):
    out = json.loads(sh(binary, "verify", a, b, "--random", "8", "--seed", "2", "--min-cosine", "0",
                        "--json", "-", *shape))
    outs = out["outputs"]
    return (sum(o["cosine_mean"] for o in outs) / len(outs), min(o["cosine"] for o in outs))


def bench(binary, a, b, shape):
    out = json.loads(sh(binary, "bench", a, b, "--runs", "10", "--warmup", "2", "--json", *shape))
    return out["models"][0]["median_ms"], out["models"][1]["median_ms"]


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    binary, model, rest = args[0], args[1], args[2:]
    ratio = "0.3"
    if "--ratio" in rest:
        i = rest.index("--ratio")
        ratio = rest[i + 1]
        del rest[i:i + 2]
    shape = rest
    print(f"model {model}, ratio {ratio}")
    with tempfile.TemporaryDirectory() as tmp:
        opt = os.path.join(tmp, "opt.onnx")
        sh(binary, "optimize", model, "-o", opt, "--no-check", *shape)
        rows = []
        for crit in ["l1", "l2", "bn-scale", "activation-mean", "activation-entropy"]:
            modes = [("compensated", []), ("plain", ["--no-compensation"])]
            if crit == "l1":
                modes.append(("refit", ["--refit"]))  # one criterion: refit runs tract per layer
            for mode, flags in modes:
                out = os.path.join(tmp, f"{crit}_{mode}.onnx")
                text = sh(binary, "prune", model, "-o", out, "--ratio", ratio, "--criterion", crit,
                          "--random", "8", "--seed", "1", *flags, *shape)
                if crit == "l1" and mode == "compensated":
                    for line in text.splitlines():
                        if line.startswith(("parameters", "MACs")):
                            print(line)
                    t_orig, t_pruned = bench(binary, model, out, shape)
                    t_opt, t_pruned2 = bench(binary, opt, out, shape)
                    print(f"tract median: original {t_orig:.2f} ms, optimized original {t_opt:.2f} ms, "
                          f"pruned {t_pruned:.2f} / {t_pruned2:.2f} ms -> {t_orig / t_pruned:.2f}x vs "
                          f"original, {t_opt / t_pruned2:.2f}x vs optimized")
                removed = re.search(r"removed (\d+) channel", text)
                mean, worst = cosines(binary, model, out, shape)
                rows.append((crit, mode, removed.group(1) if removed else "?", mean, worst))
    print(f"{'criterion':<20} {'recovery':<12} {'removed':>8} {'cos mean':>9} {'cos worst':>9}")
    for crit, mode, removed, mean, worst in rows:
        print(f"{crit:<20} {mode:<12} {removed:>8} {mean:>9.4f} {worst:>9.4f}")


if __name__ == "__main__":
    main()
