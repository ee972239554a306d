#!/usr/bin/env bash
# The test run: makes the onnxruntime references (once; they are derived data, never
# committed), then runs every test of the workspace.
#   scripts/test.sh            x86-64 (the host)
#   scripts/test.sh aarch64    cross-compiled, under qemu-aarch64: the whole suite on a
#                              Cortex-A72 (Pi 4: no dotprod, no fp16), then the kernel and
#                              dispatch tests again on `-cpu max` (dotprod, fp16), and
#                              the f16 model tests where f16 arithmetic runs
# Needs ../shared (models and data) beside the project, python3 and, for aarch64,
# gcc-aarch64-linux-gnu and qemu-user (see .ci/run for the packages).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/refvenv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import onnxruntime, cv2, numpy" 2>/dev/null; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" 2>/dev/null; then
        # Debian's python3 without python3-venv cannot bootstrap pip (no ensurepip): make the
        # venv without pip and install pip from its own wheel (sha256-checked).
        rm -rf "$venv"
        python3 -m venv --without-pip "$venv"
        python3 tools/refs/bootstrap_pip.py "$venv/bin/python"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tools/refs/requirements.txt
fi
"$venv/bin/python" tools/refs/make_refs.py

case "${1:-host}" in
host)
    # --release: the tests run real models on real images (faster optimised), and the build
    # shares its compiled dependencies with `cargo run --release -- demo`.
    cargo test --release --workspace
    # The committed V4L2 bindings' layout tests (vendor/v4l2-sys-mit).
    cargo test --release -p v4l2-sys-mit
    ;;
aarch64)
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
    # Tests that start our binaries need the emulator in front of them too.
    export FACEGATE_TEST_RUNNER="$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER"
    # Skipped here, run natively only:
    # - the int8 fidelity tests (recogniser, detector, liveness) calibrate on 206 photos
    #   first: hours under emulation. The int8 kernels they rest on are tested here
    #   (src/kernels/tests.rs).
    # - the dataset measurements (liveness BPCER/APCER with our detector on 150 photos at
    #   640x640, the frozen floor over every frame of the recorded clips): ~15 minutes
    #   here, and they measure the data; the per-face comparisons with onnxruntime that
    #   stay in the run check the kernels beneath them on this CPU.
    # - the lockout across restarts (five runs of the binary over whole clips, ~4 minutes
    #   here): policy and file logic, no kernel of its own; the binary itself runs under
    #   qemu in boards_shipped and input_hardening.
    # The int8 models the remaining tests read (models/*_int8.safetensors) are the ones the
    # demo or the host run converted: run one of them first, or they calibrate under qemu.
    # --release: emulated code runs ~5x faster optimised, and the board build
    # (scripts/dist.sh) then reuses the compiled dependencies.
    QEMU_CPU=cortex-a72 cargo test --release --workspace --target aarch64-unknown-linux-gnu --no-fail-fast \
        -- --skip int8_embeddings --skip int8_detector \
        --skip f16_and_int8_keep_the_decision_and_the_figures \
        --skip dev_half_meets_the_targets_end_to_end \
        --skip frozen_floor_is_below_every_real_camera_change_with_margin \
        --skip lockout_survives_restarts_and_a_missing_state_locks_out
    QEMU_CPU=cortex-a72 cargo test --release -p v4l2-sys-mit --target aarch64-unknown-linux-gnu
    QEMU_CPU=max cargo test --release --lib --target aarch64-unknown-linux-gnu -- kernels
    # f16 model files against f32 where the f16 arithmetic kernels run (FEAT_FP16): ~2 min.
    QEMU_CPU=max cargo test --release --target aarch64-unknown-linux-gnu --test engine -- \
        scrfd_f16_weights_stay_close mobilefacenet_f16_kernels_against_f32
    ;;
*)
    echo "usage: scripts/test.sh [host|aarch64]" >&2
    exit 2
    ;;
esac
