#!/usr/bin/env python3
"""Time `facegate bench` and its peers (onnxruntime, OpenCV DNN, ncnn fp32, ncnn default,
optionally tract) on the same models, input sizes and thread counts; print one table of
medians with facegate/peer ratios and a final JSON line. See README.md."""

import argparse
import importlib.util
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import time

import numpy as np

CASES = [
    # (label, onnx file, facegate flag, input size WxH)
    ("mobilefacenet_512", "mobilefacenet_512.onnx", "--rec", (112, 112)),
    ("scrfd_500m_kps", "scrfd_500m_kps.onnx", "--det", (640, 640)),
    ("scrfd_2.5g_kps", "scrfd_2.5g_kps.onnx", "--det", (640, 640)),
]
ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../.."))


class PeerError(Exception):
    """A peer could not load or run a model; the message goes into the table's notes."""


def synthetic_input(size):
    # One fixed tensor for every tool, so no tool sees easier data than another.
    w, h = size
    return np.random.default_rng(0).uniform(-1, 1, (1, 3, h, w)).astype(np.float32)


# Each in-process peer is `load(onnx_path, x, threads, cache) -> run`, where run() does one
# inference on x and returns the outputs as a list of arrays in the ONNX output order.

def load_ort(path, x, threads, cache):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feed)


def load_opencv(path, x, threads, cache):
    import cv2
    # OpenCV 5's new engine warns about settings it ignores; errors still raise.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    cv2.setNumThreads(threads)  # process-wide; set again before every model load
    net = cv2.dnn.readNetFromONNX(path)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)  # CPU is the default target
    names = net.getUnconnectedOutLayersNames()

    def run():
        net.setInput(x)
        return net.forward(names)
    return run


def pnnx_exe():
    # The pip package's `pnnx` entry point imports torch only for its Python API; the
    # converter itself is a standalone binary in the package directory, so find it without
    # importing the package (the README installs pnnx with --no-deps, without torch).
    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations:
        raise PeerError("pip package pnnx not installed")
    exe = os.path.join(spec.submodule_search_locations[0], "pnnx")
    if not os.access(exe, os.X_OK):
        raise PeerError(f"no pnnx binary at {exe}")
    return exe


def ncnn_convert(path, x, fp16, cache):
    """ONNX -> .ncnn.param/.bin in the cache (once per model, shape and weight precision)."""
    name = os.path.splitext(os.path.basename(path))[0]
    shape = ",".join(map(str, x.shape))
    out = os.path.join(cache, f"{name}-{x.shape[3]}x{x.shape[2]}-{'fp16' if fp16 else 'fp32'}")
    param, binf = os.path.join(out, "model.ncnn.param"), os.path.join(out, "model.ncnn.bin")
    if os.path.exists(binf) and os.path.getmtime(binf) >= os.path.getmtime(path):
        return param, binf
    os.makedirs(out, exist_ok=True)
    # pnnx writes side files next to its input: convert a copy so shared/ is never touched.
    src = os.path.join(out, "model.onnx")
    shutil.copyfile(path, src)
    r = subprocess.run([pnnx_exe(), src, f"inputshape=[{shape}]", f"fp16={int(fp16)}",
                        f"ncnnparam={param}", f"ncnnbin={binf}"],
                       cwd=out, capture_output=True, text=True)
    if r.returncode != 0 or not os.path.exists(binf):
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise PeerError(f"pnnx failed ({r.returncode}): {tail[0]}")
    return param, binf


def load_ncnn(fp16):
    def load(path, x, threads, cache):
        import ncnn
        param, binf = ncnn_convert(path, x, fp16, cache)
        net = ncnn.Net()
        net.opt.num_threads = threads
        if not fp16:
            # ncnn's defaults store and compute in fp16 where the CPU can; switch all of
            # that off so this column is a like-for-like fp32 comparison.
            net.opt.use_fp16_storage = False
            net.opt.use_fp16_packed = False
            net.opt.use_fp16_arithmetic = False
        if net.load_param(param) != 0 or net.load_model(binf) != 0:
            raise PeerError(f"ncnn could not load {param}")
        # pnnx names blobs in0.. and out0.. in ONNX order; sort so outputs line up with ORT.
        outs = sorted(net.output_names(), key=lambda n: int(re.sub(r"\D", "", n) or 0))
        mat = ncnn.Mat(np.ascontiguousarray(x[0]))

        def run():
            ex = net.create_extractor()  # one extractor per inference, as ncnn expects
            ex.input(net.input_names()[0], mat)
            res = []
            for n in outs:
                rc, m = ex.extract(n)
                if rc != 0:
                    raise PeerError(f"ncnn extract {n} failed ({rc})")
                res.append(np.array(m))
            return res
        return run
    return load


PEERS = {  # column name -> loader
    "onnxruntime": load_ort,
    "opencv": load_opencv,
    "ncnn_fp32": load_ncnn(fp16=False),
    "ncnn_default": load_ncnn(fp16=True),
}


def time_inproc(load, path, x, threads, iters, warmup, cache):
    try:
        run = load(path, x, threads, cache)
        outs = run()
        for _ in range(warmup - 1):
            run()
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            run()
            times.append((time.perf_counter() - t) * 1e3)
    except Exception as e:  # any load or run failure becomes a note in the table
        raise PeerError(f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:160]}") from e
    return statistics.median(times), outs


def run_json(args, key, env=None):
    """Run a command whose last stdout line is JSON; return the float found under `key`."""
    name = os.path.basename(args[0])
    try:
        r = subprocess.run(args, capture_output=True, text=True, env=env)
    except OSError as e:
        raise PeerError(f"cannot run {args[0]}: {e.strerror}") from e
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        err = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise PeerError(f"{name} exited {r.returncode}: {err[:160]}")
    try:
        value = json.loads(lines[-1])
        for k in key:
            value = value[k]
        return float(value)
    except (ValueError, KeyError, TypeError) as e:
        raise PeerError(f"{name}: no {'.'.join(key)} in last line {lines[-1][:80]!r}") from e


def time_facegate(a, flag, model, size, threads):
    w, h = size
    args = shlex.split(a.facegate) + ["bench", flag, model, "--threads", str(threads),
                                      "--iters", str(a.iters), "--warmup", str(a.warmup),
                                      "--precision", a.precision]
    if flag == "--det":
        args += ["--size", f"{w}x{h}"]
    args += shlex.split(a.extra)
    return run_json(args, ["det" if flag == "--det" else "rec", "median_ms"])


def time_tract(a, path, size, threads):
    # The interface is three arguments; the thread count rides in the environment so a
    # runner may opt into tract's multithreaded executor without the interface changing.
    w, h = size
    env = dict(os.environ, PEERS_THREADS=str(threads))
    return run_json(shlex.split(a.tract) + [path, f"{w}x{h}", str(a.iters)], ["median_ms"], env)


def facegate_model(a, label, flag, onnx_path):
    # --det-model/--rec-model: `LABEL=PATH` for one case, or a bare PATH for every case of
    # that kind, so facegate can run converted (int8/f16) files while peers run the ONNX.
    chosen = onnx_path
    for spec in (a.det_model if flag == "--det" else a.rec_model) or []:
        key, sep, p = spec.partition("=")
        if not sep:
            chosen = spec
        elif key == label:
            return p
    return chosen


def rel_err(outs, ref):
    a = np.concatenate([np.asarray(o, np.float32).ravel() for o in outs])
    b = np.concatenate([np.asarray(o, np.float32).ravel() for o in ref])
    if a.size != b.size:
        return float("inf")
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", default=os.path.join(ROOT, "../shared"))
    ap.add_argument("--facegate", default=os.path.join(ROOT, "target/release/facegate"),
                    help="command taking `bench ...` arguments")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--passes", type=int, default=1,
                    help="repeat everything P times, tools interleaved; report the median "
                         "of the per-pass medians")
    ap.add_argument("--models", nargs="+", default=[c[0] for c in CASES],
                    choices=[c[0] for c in CASES], help="a subset of the models")
    ap.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    ap.add_argument("--tract", help="tract runner command: `CMD MODEL_ONNX WxH ITERS`, "
                                    'last stdout line {"median_ms": f}; omitted: no column')
    ap.add_argument("--precision", default="f32", help="facegate bench --precision")
    ap.add_argument("--det-model", nargs="+", metavar="[LABEL=]PATH",
                    help="facegate's detector file instead of the ONNX")
    ap.add_argument("--rec-model", nargs="+", metavar="[LABEL=]PATH",
                    help="facegate's recogniser file instead of the ONNX")
    ap.add_argument("--extra", default="", help="extra arguments for facegate bench")
    ap.add_argument("--cache", default=os.path.join(ROOT, "target/peers/ncnn"),
                    help="converted ncnn models (never committed)")
    a = ap.parse_args()
    onnx_dir = os.path.join(a.shared, "models", "onnx")
    cases = [c for c in CASES if c[0] in a.models]
    tools = ["facegate"] + a.peers + (["tract"] if a.tract else [])
    peers = tools[1:]

    # samples[(label, threads)][tool] = per-pass medians; notes[(label, threads, tool)]
    samples = {(c[0], t): {tool: [] for tool in tools} for c in cases for t in a.threads}
    notes, errs = {}, {}
    for p in range(a.passes):
        # Rotate the tool order each pass so no tool always runs first (or right after the
        # heaviest one) while the machine warms up or another job comes and goes.
        order = tools[p % len(tools):] + tools[:p % len(tools)]
        for label, file, flag, size in cases:
            path = os.path.join(onnx_dir, file)
            x = synthetic_input(size)
            for t in a.threads:
                row = samples[(label, t)]
                outs = {}
                for tool in order:
                    if (label, t, tool) in notes:
                        continue  # failed in an earlier pass; don't retry every pass
                    try:
                        if tool == "facegate":
                            ms = time_facegate(a, flag, facegate_model(a, label, flag, path),
                                               size, t)
                        elif tool == "tract":
                            ms = time_tract(a, path, size, t)
                        else:
                            ms, outs[tool] = time_inproc(PEERS[tool], path, x, t, a.iters,
                                                         a.warmup, a.cache)
                        row[tool].append(ms)
                    except PeerError as e:
                        notes[(label, t, tool)] = str(e)
                # A faster peer is only a fair comparison if it computes the same thing:
                # record each in-process peer's largest deviation from onnxruntime.
                ref = outs.get("onnxruntime")
                for tool, o in outs.items():
                    if ref is not None and tool != "onnxruntime":
                        errs[(label, t, tool)] = max(errs.get((label, t, tool), 0),
                                                     rel_err(o, ref))
                print(f"pass {p + 1}/{a.passes} {label} threads={t} done", flush=True)

    # Table: medians of per-pass medians; a failed cell shows [n] pointing at a note.
    footnotes, results = [], []
    cols = ["facegate"] + peers
    heads = [f"{c} ms" for c in cols] + ["fastest", "fg/fastest"] + [f"fg/{c}" for c in peers]
    widths = [max(len(h), 7) for h in heads]
    widths[len(cols)] = max([len(c) for c in peers] + [7])  # the fastest peer's name
    print()
    print(f"{'model':<18} {'thr':>3} " + " ".join(f"{h:>{w}}" for h, w in zip(heads, widths)))
    for label, _, _, _ in cases:
        for t in a.threads:
            med = {tool: statistics.median(v) for tool, v in samples[(label, t)].items() if v}
            cells = []
            for c in cols:
                if c in med:
                    cells.append(f"{med[c]:.2f}")
                else:
                    footnotes.append(f"{label} threads={t} {c}: {notes.get((label, t, c))}")
                    cells.append(f"fail[{len(footnotes)}]")
            ok = [c for c in peers if c in med]
            fastest = min(ok, key=med.get) if ok else None
            fg = med.get("facegate")
            ratio = lambda c: f"{fg / med[c]:.2f}" if fg and c in med else "-"
            cells += [fastest or "-", ratio(fastest)] + [ratio(c) for c in peers]
            print(f"{label:<18} {t:>3} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
            results.append({"model": label, "threads": t, "median_ms": med,
                            "per_pass_ms": samples[(label, t)], "fastest_peer": fastest,
                            "facegate_over_peer": {c: fg / med[c] for c in ok if fg},
                            "errors": {c: notes[(label, t, c)] for c in cols
                                       if (label, t, c) in notes},
                            "max_rel_diff_vs_onnxruntime":
                                {c: errs[(label, t, c)] for c in peers if (label, t, c) in errs}})
    for i, n in enumerate(footnotes, 1):
        print(f"[{i}] {n}")
    # fp16 storage legitimately moves outputs by ~1e-3 of their range; far more than that
    # means a conversion changed the model, and its timing should not be trusted.
    for (label, t, tool), e in sorted(errs.items()):
        if e > (2e-2 if tool == "ncnn_default" else 1e-3):
            print(f"warning: {tool} on {label} threads={t} differs from onnxruntime "
                  f"by {e:.2g} of the output range")
    print("ratio: facegate ms / peer ms; below 1.00 facegate is faster. "
          f"{a.passes} pass(es) x {a.iters} iters, precision {a.precision}.")
    print(json.dumps({"iters": a.iters, "warmup": a.warmup, "passes": a.passes,
                      "precision": a.precision, "results": results}))


if __name__ == "__main__":
    main()
