#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time: scripts/fuzz.sh [SECONDS per target,
# default 30]. The seed corpora are built here from ../shared (FACEGATE_SHARED) into target/ —
# nothing of ../shared is committed. Needs the nightly toolchain and cargo-fuzz; both are
# installed when missing. A crash, a panic, a timeout (10 s per input) or more than 1 GB of
# memory fails the run; libFuzzer leaves the input in fuzz/artifacts/TARGET/ and the input
# becomes a regression test in tests/bad_input.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
# AddressSanitizer by default. CI sets FUZZ_SANITIZER=none: the build then takes about half the
# time, and what it gives up is small here: the fuzzed parsers are safe Rust (bounds checks
# panic without a sanitizer), and cargo-fuzz's ASan does not instrument libjpeg's C code.
sanitizer=${FUZZ_SANITIZER:-address}
shared=${FACEGATE_SHARED:-$PWD/../shared}
targets=(image_decode mjpeg_split model_load store_load)

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz --locked

seeds=$PWD/target/fuzz-seeds
corpus=$PWD/target/fuzz-corpus
rm -rf "$seeds"
mkdir -p "$seeds" "$corpus"
for t in "${targets[@]}"; do mkdir -p "$seeds/$t" "$corpus/$t"; done

# Images: small JPEGs (grey LFW, colour photos) and PNGs.
cp "$shared/data/images/two_faces.jpg" "$seeds/image_decode/"
find "$shared/data/faces/lfw" -name '*.jpg' | sort | sed -n 1,4p | xargs -I{} cp {} "$seeds/image_decode/"
find "$shared/data/faces/examples" -name '*.png' | sort | sed -n 1,2p | xargs -I{} cp {} "$seeds/image_decode/"
# MJPEG: the first ~3 frames of each recorded clip (the cut leaves a broken last frame, too).
for clip in "$shared"/data/video/*.mjpeg; do
    head -c 60000 "$clip" > "$seeds/mjpeg_split/$(basename "$clip")"
done
# Models: the converted files the test suite and the demo use.
cp "$shared"/models/cache/*.safetensors "$seeds/model_load/" 2>/dev/null || true
cp models/*.safetensors "$seeds/model_load/" 2>/dev/null || true
# Template store: a payload with one user of two unit 128-d templates, first byte 1 = "seal it
# under the run's key" (see fuzz/fuzz_targets/store_load.rs).
python3 - "$seeds/store_load/one_user" <<'PY'
import struct, sys
dim, model = 128, b"mobilefacenet_128_relu6"
p = struct.pack("<IH", dim, len(model)) + model + struct.pack("<I", 1)
name = b"ada"
p += struct.pack("<H", len(name)) + name + struct.pack("<I", 2)
for i in range(2):
    v = [0.0] * dim
    v[i] = 1.0
    p += struct.pack(f"<{dim}f", *v)
open(sys.argv[1], "wb").write(b"\x01" + p)
PY

failed=()
for t in "${targets[@]}"; do
    echo "fuzz: $t for ${secs} s (sanitizer: $sanitizer)"
    if ! (cd fuzz && cargo +nightly fuzz run -s "$sanitizer" "$t" "$corpus/$t" "$seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
        2> >(tail -n 40 >&2)); then
        failed+=("$t")
    fi
done
if ((${#failed[@]})); then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${secs} s without a finding"
