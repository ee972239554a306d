#!/usr/bin/env bash
# Instructions per inference under qemu-aarch64: facegate (int8, one thread) against
# tract-onnx 0.23.9 (f32) on the same ONNX models. See README.md beside this file.
#
#   benches/peers/qemu_insn.sh [CPU...]        (default: cortex-a72 max)
#
# Per-inference count = count(N+1 inferences) - count(N inferences): start-up, model loading
# and warm-up cancel out. Needs: the aarch64 facegate build, the int8 model files, the tract
# runner built for aarch64 (all three are built here if missing), ../shared.
# Env: N (default 1), BUILD=0 to skip the cargo builds, TOP=mnemonics to print per run (0).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared}
TARGET=aarch64-unknown-linux-gnu
N=${N:-1}
TOP=${TOP:-0}
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

REC=models/mobilefacenet_512.int8.safetensors
DET=models/scrfd_500m_kps.int8.safetensors
for f in $REC $DET; do
    [ -f "$f" ] || { echo "missing $f: make it with quantize --precision int8 (README.md)" >&2; exit 1; }
done

# count CPU LOG CMD...: total guest instructions of one run.
count() {
    local cpu=$1 log=$2
    shift 2
    qemu-aarch64 -cpu "$cpu" -L /usr/aarch64-linux-gnu \
        -plugin "$PLUGIN",top=40 -d plugin -D "$log" "$@" >/dev/null
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
fg_rec=("$FG" bench --rec $REC --precision int8 --threads 1 --warmup 1 --iters @N@)
fg_det=("$FG" bench --det $DET --precision int8 --threads 1 --warmup 1 --size 640x640 --iters @N@)
tr_rec=("$TRACT" "$SHARED/models/onnx/mobilefacenet_512.onnx" 112x112 @N@)
tr_det=("$TRACT" "$SHARED/models/onnx/scrfd_500m_kps.onnx" 640x640 @N@)

printf '%-12s %-16s %16s %16s %8s\n' cpu model "facegate int8" "tract f32" ratio
for cpu in "${CPUS[@]}"; do
    for m in rec det; do
        case $m in
            rec) label=mobilefacenet_512; f=$(per_inf "$cpu" fg-rec "${fg_rec[@]}"); t=$(per_inf "$cpu" tract-rec "${tr_rec[@]}") ;;
            det) label=scrfd_500m_kps; f=$(per_inf "$cpu" fg-det "${fg_det[@]}"); t=$(per_inf "$cpu" tract-det "${tr_det[@]}") ;;
        esac
        printf '%-12s %-16s %16s %16s %8s\n' "$cpu" "$label" "$f" "$t" \
            "$(awk -v f="$f" -v t="$t" 'BEGIN {printf "%.3f", f / t}')"
    done
done
