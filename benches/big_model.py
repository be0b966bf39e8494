#!/usr/bin/env python3
"""A model over 2 GB (weights in external data): peak memory of `onnxopt convert` and lossless
`optimize` against the size of the weights, and whether tract loads the output.

    python3 benches/big_model.py ONNXOPT_BINARY [--gb 2.3] [--dir DIR] [--keep]

The model is written directly (no onnx package needed): a chain of 4096×4096 MatMul + Add layers
whose weights are distinct (so dedupe cannot merge them) and live in one `big.onnx.data` file next
to `big.onnx`. Peak RSS of each child from getrusage (Linux). Goal (issue 8): ≤ 1.5× the weights.
`onnxopt verify OUT --random 1` then checks that tract loads and runs the output (tract reads the
external data itself).
"""
import os
import struct
import sys
import tempfile
import time

N = 4096  # 64 MiB per float32 weight


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, wire, payload):
    key = varint((num << 3) | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 2:
        return key + varint(len(payload)) + payload
    raise ValueError(wire)


def s(num, text):
    return field(num, 2, text.encode())


def tensor_external(name, dims, location, offset, length):
    # TensorProto: dims=1, data_type=2, name=8, external_data=13 (StringStringEntryProto key=1 value=2),
    # data_location=14 (EXTERNAL=1)
    t = b"".join(field(1, 0, d) for d in dims) + field(2, 0, 1) + s(8, name)
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        t += field(13, 2, s(1, k) + s(2, v))
    return t + field(14, 0, 1)


def value_info(name, dims):
    # ValueInfoProto: name=1, type=2 -> TypeProto.tensor_type=1 -> elem_type=1, shape=2 -> dim=1 -> dim_value=1
    shape = b"".join(field(1, 2, field(1, 0, d)) for d in dims)
    ttype = field(1, 0, 1) + field(2, 2, shape)
    return s(1, name) + field(2, 2, field(1, 2, ttype))


def node(op, inputs, outputs, name):
    # NodeProto: input=1, output=2, name=3, op_type=4
    return b"".join(s(1, i) for i in inputs) + b"".join(s(2, o) for o in outputs) + s(3, name) + s(4, op)


def write_model(path, layers):
    data_name = os.path.basename(path) + ".data"
    data_path = os.path.join(os.path.dirname(path), data_name)
    nodes, inits = [], []
    offset = 0
    row = bytearray(N * 4)
    with open(data_path, "wb") as f:
        for i in range(layers):
            # Distinct, well-scaled weights, written a row block at a time (no 64 MiB array in Python).
            for r in range(N):
                v = ((r * 31 + i * 17) % 97 - 48) / (48.0 * N)
                struct.pack_into("<f", row, 0, v)
                row[4:] = row[:4] * (N - 1)
                f.write(row)
            wlen = N * N * 4
            inits.append(tensor_external(f"w{i}", [N, N], data_name, offset, wlen))
            offset += wlen
            x = "x" if i == 0 else f"h{i - 1}"
            nodes.append(node("MatMul", [x, f"w{i}"], [f"h{i}"], f"layer{i}/MatMul"))
    graph = b"".join(field(1, 2, n) for n in nodes) + s(2, "big")
    graph += b"".join(field(5, 2, t) for t in inits)
    graph += field(11, 2, value_info("x", [1, N]))
    graph += field(12, 2, value_info(f"h{layers - 1}", [1, N]))
    model = field(1, 0, 8) + s(2, "onnxopt-bench") + field(7, 2, graph) + field(8, 2, s(1, "") + field(2, 0, 13))
    with open(path, "wb") as f:
        f.write(model)
    return offset


def peak_rss_mb(cmd):
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.execv(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024.0, time.perf_counter() - t0, code


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    binary = os.path.abspath(args[0])
    gb = float(args[args.index("--gb") + 1]) if "--gb" in args else 2.3
    keep = "--keep" in args
    base = args[args.index("--dir") + 1] if "--dir" in args else None
    layers = max(1, int(gb * 1024**3 // (N * N * 4)))
    tmp = tempfile.mkdtemp(dir=base)
    path = os.path.join(tmp, "big.onnx")
    t0 = time.perf_counter()
    weights = write_model(path, layers)
    print(f"model: {layers} MatMul layers, weights {weights / 2**20:.0f} MiB in {path}.data "
          f"(written in {time.perf_counter() - t0:.1f} s)")
    rows = []
    for label, cmd in (
        ("convert", [binary, "convert", path, "-o", os.path.join(tmp, "conv.onnx"), "--external-data"]),
        ("optimize", [binary, "optimize", path, "-o", os.path.join(tmp, "opt.onnx"), "--no-check"]),
        ("verify", [binary, "verify", path, os.path.join(tmp, "opt.onnx"), "--random", "1"]),
    ):
        rss, secs, code = peak_rss_mb(cmd)
        rows.append((label, rss, secs, code))
        print(f"{label:<9} peak RSS {rss:8.0f} MiB = {rss * 2**20 / weights:.2f}x the weights, "
              f"{secs:6.1f} s, exit {code}")
    if not keep:
        for f in os.listdir(tmp):
            os.remove(os.path.join(tmp, f))
        os.rmdir(tmp)
    sys.exit(0 if all(r[3] == 0 for r in rows) else 1)


if __name__ == "__main__":
    main()
