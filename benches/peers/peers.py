#!/usr/bin/env python3
"""Time onnxruntime and `facegate bench` on the same models and sizes; print medians and
facegate/onnxruntime ratios. See README.md."""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import time

import numpy as np
import onnxruntime as ort

CASES = [
    # (label, onnx file, facegate flag, input size)
    ("mobilefacenet_512", "mobilefacenet_512.onnx", "--rec", (112, 112)),
    ("scrfd_500m_kps", "scrfd_500m_kps.onnx", "--det", (640, 640)),
    ("scrfd_2.5g_kps", "scrfd_2.5g_kps.onnx", "--det", (640, 640)),
]


def time_ort(path, size, threads, iters, warmup):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    w, h = size
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, h, w)).astype(np.float32)
    for _ in range(warmup):
        sess.run(None, {inp.name: x})
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def time_facegate(cmd, flag, model, size, threads, iters, extra):
    w, h = size
    args = shlex.split(cmd) + ["bench", flag, model, "--threads", str(threads),
                               "--iters", str(iters)]
    if flag == "--det":
        args += ["--size", f"{w}x{h}"]
    args += shlex.split(extra)
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    last = json.loads(out.strip().splitlines()[-1])
    return last["det" if flag == "--det" else "rec"]["median_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "../../../shared"))
    ap.add_argument("--facegate", default="target/release/facegate",
                    help="command taking `bench ...` arguments")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--extra", default="", help="extra arguments for facegate bench")
    a = ap.parse_args()
    onnx_dir = os.path.join(a.shared, "models", "onnx")
    print(f"{'model':<20} {'thr':>3} {'facegate ms':>12} {'onnxruntime ms':>15} {'ratio':>6}")
    for label, file, flag, size in CASES:
        path = os.path.join(onnx_dir, file)
        for t in a.threads:
            fg = time_facegate(a.facegate, flag, path, size, t, a.iters, a.extra)
            ref = time_ort(path, size, t, a.iters, a.warmup)
            print(f"{label:<20} {t:>3} {fg:>12.2f} {ref:>15.2f} {fg / ref:>6.2f}")


if __name__ == "__main__":
    main()
