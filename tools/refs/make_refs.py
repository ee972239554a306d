#!/usr/bin/env python3
"""Generate the test references the Rust tests read, from the independent onnxruntime
reference `<shared>/tools/ref_pipeline.py` (imported or run from there, never copied).

Outputs (under --out, default <repo>/target/refs) are never committed: they are derived
from research-only weights and data and are regenerated at test/CI time. See README.md.

Paths inside the outputs (image paths in JSON) are relative to the shared folder, e.g.
"data/images/crowd_selfie.jpg": ref_pipeline is run with the shared folder as its working
directory, so a consumer joins them with its own path to `shared/`.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent.parent

HEAD_MODELS = ["det_500m", "det_2.5g", "scrfd_500m_kps", "scrfd_2.5g_kps"]
DETECT_MODELS = ["det_500m", "det_2.5g"]
REC_MODELS = ["mobilefacenet_512", "mobilefacenet_128_relu6"]
LIVE_MODELS = ["antispoof_print_replay_1.5_128", "antispoof_bin_1.5_128"]
LIVE_DIRS = ["data/liveness/pourfard_dev/real", "data/liveness/pourfard_dev/fake",
             "data/liveness/silentface"]
CROWD = "data/images/crowd_selfie.jpg"
TWO = "data/images/two_faces.jpg"
WIDER_DIR = "data/detection/wider_face/WIDER_val/images"
EXAMPLES_DIR = "data/faces/examples"
IMAGE_EXT = {".jpg", ".jpeg", ".png"}


def log(msg):
    print(msg, flush=True)


def write_atomic(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_f32(path: Path, arr):
    write_atomic(path, np.ascontiguousarray(arr, dtype="<f4").tobytes())


def write_json(path: Path, obj):
    write_atomic(path, (json.dumps(obj, indent=1) + "\n").encode())


def list_images(shared: Path, rel_dir: str):
    """Sorted image paths (relative to shared, '/'-separated) under rel_dir, recursively."""
    root = shared / rel_dir
    if not root.is_dir():
        raise SystemExit(f"{root}: missing (is --shared right?)")
    out = [p.relative_to(shared).as_posix() for p in root.rglob("*")
           if p.is_file() and p.suffix.lower() in IMAGE_EXT]
    return sorted(out)


class Gen:
    def __init__(self, shared: Path, out: Path, force: bool):
        self.shared, self.out, self.force = shared, out, force
        sys.path.insert(0, str(shared / "tools"))
        import ref_pipeline  # noqa: E402  (from <shared>/tools, on purpose)
        self.rp = ref_pipeline
        self.ref_script = shared / "tools" / "ref_pipeline.py"
        self.timings = []

    def model(self, name):
        p = self.shared / "models" / "onnx" / f"{name}.onnx"
        if not p.is_file():
            raise SystemExit(f"{p}: model missing")
        return p

    def done(self, marker: Path):
        if marker.exists() and not self.force:
            log(f"skip   {marker.relative_to(self.out)} (present; --force to redo)")
            return True
        return False

    # 1. raw head outputs on identical input
    def heads(self):
        for name in HEAD_MODELS:
            marker = self.out / "heads" / f"{name}.json"  # written last: marks completion
            if self.done(marker):
                continue
            t0 = time.time()
            det = self.rp.Scrfd(str(self.model(name)), size=(640, 640))
            rgb = self.rp.load_rgb(str(self.shared / CROWD))
            canvas, _scale = det.letterbox(rgb)
            # exactly the blob ref_pipeline.Scrfd.detect builds
            blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
            blob = np.ascontiguousarray(blob)
            outs = det.sess.run(det.out_names, {det.input_name: blob})
            write_f32(self.out / "heads" / f"{name}.input.f32", blob)
            meta = {"model": f"models/onnx/{name}.onnx", "image": CROWD,
                    "input_shape": list(blob.shape), "outputs": []}
            for i, (oname, o) in enumerate(zip(det.out_names, outs)):
                if o.ndim == 3 and o.shape[0] == 1:
                    o = o[0]
                write_f32(self.out / "heads" / f"{name}.out{i}.f32", o)
                meta["outputs"].append({"name": oname, "shape": list(o.shape)})
            write_json(marker, meta)
            log(f"wrote  heads/{name}: input {list(blob.shape)}, {len(outs)} outputs "
                f"{[m['shape'] for m in meta['outputs']]} ({time.time() - t0:.1f}s)")

    # 2. identical aligned crops for both recognisers
    def rec(self):
        marker = self.out / "rec" / "crops.json"
        if self.done(marker):
            return
        t0 = time.time()
        det = self.rp.Scrfd(str(self.model("det_500m")), size=(640, 640))
        crops, entries = [], []
        for rel in list_images(self.shared, EXAMPLES_DIR):
            rgb = self.rp.load_rgb(str(self.shared / rel))
            for fi, f in enumerate(det.detect(rgb)):
                M = self.rp.umeyama(np.asarray(f["kps"], dtype=np.float64), self.rp.ARCFACE_DST)
                crop = self.rp.warp_affine(rgb, M)
                blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)
                crops.append(np.ascontiguousarray(blob))
                entries.append({"image": rel, "face": fi, "score": f["score"],
                                "box": f["box"], "kps": f["kps"]})
        stack = np.stack(crops).astype(np.float32)
        outputs = {}
        for name in REC_MODELS:
            emb = self.rp.Embedder(str(self.model(name)))
            rows = [emb.sess.run(None, {emb.input_name: c[None]})[0].reshape(-1) for c in stack]
            res = np.stack(rows).astype(np.float32)  # raw, NOT L2-normalised
            write_f32(self.out / "rec" / f"{name}.out.f32", res)
            outputs[name] = {"file": f"rec/{name}.out.f32", "shape": list(res.shape)}
            log(f"wrote  rec/{name}.out.f32: {list(res.shape)} raw embeddings")
        write_f32(self.out / "rec" / "crops.f32", stack)
        write_json(marker, {"detector": "models/onnx/det_500m.onnx", "det_size": [640, 640],
                            "shape": list(stack.shape),
                            "normalisation": "(x-127.5)/127.5, RGB, NCHW",
                            "crops": entries, "outputs": outputs})
        log(f"wrote  rec/crops.f32: {list(stack.shape)} from "
            f"{len({e['image'] for e in entries})} images ({time.time() - t0:.1f}s)")

    # 3. end-to-end runs of ref_pipeline.py as a subprocess (JSON lines)
    def run_ref(self, out_rel: str, args, images):
        dst = self.out / out_rel
        if self.done(dst):
            return
        t0 = time.time()
        cmd = [sys.executable, str(self.ref_script)] + args + images
        res = subprocess.run(cmd, cwd=self.shared, stdout=subprocess.PIPE, check=True)
        lines = [ln for ln in res.stdout.decode().splitlines() if ln.strip()]
        if len(lines) != len(images):
            raise SystemExit(f"{out_rel}: expected {len(images)} JSON lines, got {len(lines)}")
        nfaces = sum(len(json.loads(ln)["faces"]) for ln in lines)
        write_atomic(dst, ("\n".join(lines) + "\n").encode())
        log(f"wrote  {out_rel}: {len(lines)} images, {nfaces} faces ({time.time() - t0:.1f}s)")

    def detect(self):
        wider = list_images(self.shared, WIDER_DIR)
        if len(wider) != 394:
            log(f"note   {WIDER_DIR}: {len(wider)} images (expected 394)")
        for name in DETECT_MODELS:
            m = f"models/onnx/{name}.onnx"
            self.run_ref(f"detect/{name}_640x640.jsonl",
                         ["detect", "--det", m, "--size", "640x640"], [CROWD, TWO] + wider)
            for size in ["320x320", "1280x736"]:
                self.run_ref(f"detect/{name}_{size}_crowd.jsonl",
                             ["detect", "--det", m, "--size", size], [CROWD])

    def embed(self):
        examples = list_images(self.shared, EXAMPLES_DIR)
        for rec in REC_MODELS:
            self.run_ref(f"embed/det_500m_{rec}.jsonl",
                         ["embed", "--det", "models/onnx/det_500m.onnx",
                          "--rec", f"models/onnx/{rec}.onnx"], examples)

    def liveness(self):
        images = [p for d in LIVE_DIRS for p in list_images(self.shared, d)]
        for live in LIVE_MODELS:
            self.run_ref(f"liveness/det_500m_{live}.jsonl",
                         ["liveness", "--det", "models/onnx/det_500m.onnx",
                          "--live", f"models/onnx/{live}.onnx"], images)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared",
                    help="the shared data/models folder (default: <repo>/../shared)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "target" / "refs",
                    help="output folder (default: <repo>/target/refs; a relative path is "
                         "taken relative to the current directory)")
    ap.add_argument("--force", action="store_true", help="regenerate outputs already present")
    ap.add_argument("--only", choices=["heads", "rec", "detect", "embed", "liveness"], action="append",
                    help="generate only these groups (repeatable; default: all)")
    a = ap.parse_args()
    shared, out = a.shared.resolve(), a.out.resolve()
    if not (shared / "tools" / "ref_pipeline.py").is_file():
        raise SystemExit(f"{shared}: no tools/ref_pipeline.py here; pass --shared DIR")
    g = Gen(shared, out, a.force)
    t0 = time.time()
    for step in ["heads", "rec", "detect", "embed", "liveness"]:
        if a.only is None or step in a.only:
            getattr(g, step)()
    log(f"done   {out} in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
