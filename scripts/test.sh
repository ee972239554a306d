#!/usr/bin/env bash
# The test run: makes the onnxruntime references (once; they are derived data, never
# committed), then runs every test of the workspace.
#   scripts/test.sh            x86-64 (the host)
#   scripts/test.sh aarch64    cross-compiled, under qemu-aarch64: the whole suite on a
#                              Cortex-A72 (Pi 4: no dotprod, no fp16), then the kernel and
#                              dispatch tests again on `-cpu max` (dotprod, fp16), and
#                              the f16 model tests where f16 arithmetic runs
# Needs ../shared (models and data) beside the project, python3, PostgreSQL's server binaries
# for the fleet tests (installed here when missing on Debian as root) and, for aarch64,
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

# The fleet tests (tests/fleet_*.rs) start throwaway PostgreSQL clusters themselves (tests/pg)
# from the server binaries, and move a door's clock with libfaketime: install them when absent
# and this machine can (Debian, as root); otherwise those tests fail saying what to install.
have_postgres() {
    [ -n "${FACEGATE_PG_BIN:-}" ] || command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if { ! have_postgres || [ ! -f /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]; } &&
    command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "test.sh: installing PostgreSQL's server and libfaketime (for the fleet tests)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql openssl faketime >/dev/null
fi

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
    # Under qemu the suite checks what the ARM CPU changes: every kernel (lib tests), our
    # engine's outputs against onnxruntime's on a subset of each comparison, and the binary
    # with the Pi 4's shipped profile end to end (boards_shipped: hamilton unlocks with
    # liveness on, the webcam stranger stays locked). Run natively only, each for its reason:
    native_only=(
        # int8 fidelity: calibrates on 206 photos first, hours here; the int8 kernels it rests
        # on are tested here (src/kernels/tests/)
        int8_embeddings int8_detector f16_and_int8_keep_the_decision_and_the_figures
        # dataset measurements (liveness BPCER/APCER with our detector on 150 photos at
        # 640x640, the frozen floor over every frame of the clips): ~15 min here, and they
        # measure the data, not the CPU
        dev_half_meets_the_targets_end_to_end
        frozen_floor_is_below_every_real_camera_change_with_margin
        # the loop's logic on replays (restarts, enrolment from folders, spoof photos): no
        # kernel of their own, minutes each here; boards_shipped runs the same loop here
        lockout_survives_restarts_and_a_missing_state_locks_out
        hamilton_replay_unlocks_for_the_enrolled_photo_with_one_pulse
        webcam_replay_never_unlocks_for_any_example_person
        hamilton_unlocks_with_liveness_on
        spoof_photos_enrolled_from_themselves_stay_locked_by_liveness_alone
        unknown_lock_state_stops_unlock_with_its_own_status
        failed_open_keeps_unlock_running_to_the_end_of_the_clip
        # the fleet end to end (desk enrolment, door sync, a dozen replays through the binary):
        # the loop's logic again, minutes here; fleet_db (TLS with ring, RLS) runs here
        enrolled_at_the_desk_unlocks_at_a_granted_door_only_until_revoked
        # attempt counting on 12 real LFW identities: embeds their photos, ~3 min here
        a_few_real_identities_mostly_unlock_and_strangers_do_not
        # our engine against candle's (candle's code, not ours, ~3 min here); our engine
        # against onnxruntime runs here in model_arithmetic and end_to_end
        scrfd_fast_equals_reference_at_any_size
        # f16 against candle's f32 (~3 min here): f16 on this CPU (weights widened, no
        # FEAT_FP16) stays covered by mobilefacenet_f16_kernels_against_f32, and the f16
        # arithmetic kernels by the -cpu max run below, which includes the SCRFD f16 test
        mobilefacenet_fast_and_f16_against_reference
        scrfd_f16_weights_stay_close
    )
    skips=()
    for t in "${native_only[@]}"; do skips+=(--skip "$t"); done
    # The int8 models the remaining tests read (models/*_int8.safetensors) are the ones the
    # demo or the host run converted: run one of them first, or they calibrate under qemu.
    # --release: emulated code runs ~5x faster optimised, and the board build
    # (scripts/dist.sh) then reuses the compiled dependencies.
    QEMU_CPU=cortex-a72 cargo test --release --workspace --target aarch64-unknown-linux-gnu \
        --no-fail-fast -- "${skips[@]}"
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
