#!/usr/bin/env bash
# Instructions per inference under qemu-aarch64: facegate (int8, one thread) against
# tract-onnx 0.23.9 (f32) on the same ONNX models. See README.md beside this file.
#
#   benches/peers/qemu_insn.sh [CPU...]        (default: cortex-a72 max)
#
# Per-inference count = count(N+1 inferences) - count(N inferences): start-up, model loading
# and warm-up cancel out. Needs: the aarch64 facegate build and the tract runner built for
# aarch64 (both built here), the boards' int8 model files in models/ (made by
# `cargo run --release -- demo`), ../shared.
# Env: SIZE=WxH the detector input (default 320x256, the boards' det_size; SIZE=640x640 for
# the figures taken before), MODELS (default "det rec"; "live" adds the anti-spoofing net,
# "loop" the whole unlock loop per frame, see below), N (default 1), BUILD=0 to skip the
# cargo builds, TOP=mnemonics to print per run (0).
#
# MODELS=loop: frame -> decision of `facegate unlock` with the Pi 4 profile (boards/rpi4.toml,
# on one thread, store under target/qemu-insn/loop) on the 640x360 YUYV webcam clip of
# ../shared (no JPEG decoding, as the Pi 4's YUYV camera): the user is enrolled from the clip
# itself, so every frame is detected, aligned, embedded, matched, judged live and decided.
# Per frame = (count(10 frames) - count(5 frames)) / 5; facegate only (tract has no loop).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared}
TARGET=aarch64-unknown-linux-gnu
N=${N:-1}
TOP=${TOP:-0}
SIZE=${SIZE:-320x256}
read -r -a MODELS <<<"${MODELS:-det rec}"
CPUS=("$@")
[ ${#CPUS[@]} -gt 0 ] || CPUS=(cortex-a72 max)

OUT=$ROOT/target/qemu-insn
mkdir -p "$OUT"
PLUGIN=$OUT/libinsn_count.so
if [ ! -f "$PLUGIN" ] || [ "$SHARED/tools/qemu-insn/insn_count.c" -nt "$PLUGIN" ]; then
    gcc -shared -fPIC -O2 -o "$PLUGIN" "$SHARED/tools/qemu-insn/insn_count.c"
fi

FG=$ROOT/target/$TARGET/release/facegate
TRACT=$ROOT/target/peers-tract/$TARGET/release/tract-runner
if [ "${BUILD:-1}" != 0 ]; then
    cargo build --release --target $TARGET --bin facegate >&2
    (cd benches/peers/tract &&
        CARGO_TARGET_DIR=$ROOT/target/peers-tract cargo build --release --target $TARGET >&2)
fi

# The boards' files ([models] and [liveness] of boards/*.toml) and the ONNX each was
# converted from, which tract runs.
REC=models/mobilefacenet_512_int8.safetensors
DET=models/det_500m_int8.safetensors
LIVE=models/antispoof_print_replay_1.5_128_int8.safetensors
for f in $REC $DET $LIVE; do
    [ -f "$f" ] || { echo "missing $f: make it with \`cargo run --release -- demo\` (README.md)" >&2; exit 1; }
done

# count CPU LOG CMD...: total guest instructions of one run.
count() {
    local cpu=$1 log=$2
    shift 2
    qemu-aarch64 -cpu "$cpu" -L /usr/aarch64-linux-gnu \
        -plugin "$PLUGIN",top=40 -d plugin -D "$log" "$@" >"$log.out"
    awk '/^total_insns/ {print $2}' "$log"
}

# per_inf CPU NAME CMD-WITH-@N@...: count(N+1) - count(N), the @N@ in the command replaced.
per_inf() {
    local cpu=$1 name=$2
    shift 2
    local a b args1=() args2=()
    for x in "$@"; do args1+=("${x//@N@/$N}"); args2+=("${x//@N@/$((N + 1))}"); done
    a=$(count "$cpu" "$OUT/$name-$cpu-n$N.log" "${args1[@]}")
    b=$(count "$cpu" "$OUT/$name-$cpu-n$((N + 1)).log" "${args2[@]}")
    if [ "$TOP" != 0 ]; then
        echo "--- $name $cpu (run with N+1; includes loading):" >&2
        sed -n "2,$((TOP + 1))p" "$OUT/$name-$cpu-n$((N + 1)).log" >&2
    fi
    echo $((b - a))
}

# --warmup 1 in both runs: facegate always warms up at least once, so N and N+1 differ by
# exactly one timed inference.
# The live row is the network alone for tract; facegate's includes the crop from a frame of
# SIZE, its resize to 128x128 and the softmax (`bench --live`), a little more work.
fg_rec=("$FG" bench --rec $REC --precision int8 --threads 1 --warmup 1 --iters @N@)
fg_det=("$FG" bench --det $DET --precision int8 --threads 1 --warmup 1 --size "$SIZE" --iters @N@)
fg_live=("$FG" bench --live $LIVE --precision int8 --threads 1 --warmup 1 --size "$SIZE" --iters @N@)
tr_rec=("$TRACT" "$SHARED/models/onnx/mobilefacenet_512.onnx" 112x112 @N@)
tr_det=("$TRACT" "$SHARED/models/onnx/det_500m.onnx" "$SIZE" @N@)
tr_live=("$TRACT" "$SHARED/models/onnx/antispoof_print_replay_1.5_128.onnx" 128x128 @N@)

# The unlock loop of MODELS=loop: a copy of the Pi 4 profile on one thread with its store here
# and a camera of 5 fps (the loop looks at most at n = 5 frames a second: at 30 fps a replay
# would skip 5 frames of 6), clips of the first 5 and 10 frames of the YUYV webcam clip, one
# user enrolled from it.
loop_setup() {
    local d=$OUT/loop
    rm -rf "$d" && mkdir -p "$d"
    sed -e 's/^threads = .*/threads = 1/' -e "s|^path = .*|path = \"$d/templates.fgt\"|" \
        -e 's/^fps = .*/fps = 5/' -e '/^\[gpio\]/,/^open_ms/d' boards/rpi4.toml >"$d/board.toml"
    local clip=$SHARED/data/video/webcam_talking_640x360_10f.yuyv
    head -c $((5 * 640 * 360 * 2)) "$clip" >"$d/clip5.yuyv"
    head -c $((10 * 640 * 360 * 2)) "$clip" >"$d/clip10.yuyv"
    FACEGATE_ROOT=$ROOT qemu-aarch64 -cpu cortex-a72 -L /usr/aarch64-linux-gnu "$FG" enroll \
        --board "$d/board.toml" --user talker --source "yuyv:$clip@640x360" >"$d/enroll.log" 2>&1
    # both runs start from the policy state of a fresh enrolment
    cp -p "$d/templates.fgt.state" "$d/state.fresh"
}
loop_per_frame() {
    local cpu=$1 d=$OUT/loop a b
    export FACEGATE_ROOT=$ROOT
    cp -p "$d/state.fresh" "$d/templates.fgt.state"
    a=$(count "$cpu" "$d/unlock-$cpu-5.log" "$FG" unlock --board "$d/board.toml" \
        --source "yuyv:$d/clip5.yuyv@640x360")
    cp -p "$d/state.fresh" "$d/templates.fgt.state"
    b=$(count "$cpu" "$d/unlock-$cpu-10.log" "$FG" unlock --board "$d/board.toml" \
        --source "yuyv:$d/clip10.yuyv@640x360")
    echo $(((b - a) / 5))
}
for m in "${MODELS[@]}"; do [ "$m" != loop ] || loop_setup; done

printf '%-12s %-26s %16s %16s %8s\n' cpu model "facegate int8" "tract f32" ratio
for cpu in "${CPUS[@]}"; do
    for m in "${MODELS[@]}"; do
        case $m in
            rec) label="mobilefacenet_512 112x112"; fg=("${fg_rec[@]}"); tr=("${tr_rec[@]}") ;;
            det) label="det_500m $SIZE"; fg=("${fg_det[@]}"); tr=("${tr_det[@]}") ;;
            live) label="antispoof 128x128"; fg=("${fg_live[@]}"); tr=("${tr_live[@]}") ;;
            loop)
                printf '%-12s %-26s %16s %16s %8s\n' "$cpu" "unlock loop per frame" \
                    "$(loop_per_frame "$cpu")" - -
                continue
                ;;
            *) echo "unknown model $m (det, rec, live, loop)" >&2; exit 2 ;;
        esac
        f=$(per_inf "$cpu" "fg-$m" "${fg[@]}")
        t=$(per_inf "$cpu" "tract-$m" "${tr[@]}")
        printf '%-12s %-26s %16s %16s %8s\n' "$cpu" "$label" "$f" "$t" \
            "$(awk -v f="$f" -v t="$t" 'BEGIN {printf "%.3f", f / t}')"
    done
done
