#!/usr/bin/env bash
# Regenerates vendor/v4l2-sys-mit/src/bindings_{x86_64,aarch64}.rs from <linux/videodev2.h>.
# Only needed when the kernel's V4L2 header or the v4l crate changes; the normal build never
# runs bindgen. Needs libclang (apt install libclang-dev) and, for aarch64, the cross headers
# (apt install libc6-dev-arm64-cross).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release --manifest-path tools/v4l2-bindings/Cargo.toml \
    --target-dir target/v4l2-bindings -- vendor/v4l2-sys-mit/wrapper.h vendor/v4l2-sys-mit/src
