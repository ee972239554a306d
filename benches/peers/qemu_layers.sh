#!/usr/bin/env bash
# Where facegate's instructions go under qemu-aarch64: per layer and per function, one int8
# inference of a model. See README.md beside this file.
#
#   benches/peers/qemu_layers.sh [CPU]          (default: cortex-a72)
#
# Runs `facegate bench --profile` under the insn_layers.c plugin: the engine reads the clock
# before and after each layer when profiling, a clock_gettime system call under qemu-user 7.2,
# and the plugin logs the instruction count at each one, so the count between the two reads
# around a layer is that layer's. The layer list is the one `--profile` prints, less the layers
# computed by another (fused siblings). Functions: count(2 inferences) - count(1) per symbol (inlined code
# counts in its caller).
# Env: MODEL=det|rec|live (default det), SIZE=WxH (default 320x256), BUILD=0 to skip the
# cargo build, TOPSYM (default 25) functions to print, SORT=1 to sort layers by count.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET=aarch64-unknown-linux-gnu
CPU=${1:-cortex-a72}
MODEL=${MODEL:-det}
SIZE=${SIZE:-320x256}
TOPSYM=${TOPSYM:-25}
OUT=$ROOT/target/qemu-insn
mkdir -p "$OUT"
PLUGIN=$OUT/libinsn_layers.so
SRC=benches/peers/insn_layers.c
if [ ! -f "$PLUGIN" ] || [ "$SRC" -nt "$PLUGIN" ]; then
    gcc -shared -fPIC -O2 -o "$PLUGIN" "$SRC"
fi
FG=$ROOT/target/$TARGET/release/facegate
if [ "${BUILD:-1}" != 0 ]; then
    cargo build --release --target $TARGET --bin facegate >&2
fi
case $MODEL in
    det) what=(--det models/det_500m_int8.safetensors --size "$SIZE") ;;
    rec) what=(--rec models/mobilefacenet_512_int8.safetensors) ;;
    live) what=(--live models/antispoof_print_replay_1.5_128_int8.safetensors --size "$SIZE") ;;
    *) echo "unknown MODEL $MODEL (det, rec, live)" >&2; exit 2 ;;
esac

# run ITERS LOG: facegate bench with the per-layer profile, one warm-up.
run() {
    qemu-aarch64 -cpu "$CPU" -L /usr/aarch64-linux-gnu -plugin "$PLUGIN",arg=top=100000 \
        -d plugin -D "$2" "$FG" bench "${what[@]}" --precision int8 --threads 1 --warmup 1 \
        --iters "$1" --profile >"$2.out"
}
L1=$OUT/layers-$MODEL-$CPU-1.log
L2=$OUT/layers-$MODEL-$CPU-2.log
run 1 "$L1"
run 2 "$L2"

# Layers of the one-inference run. Its last 2K+1 clock reads are the K profiled layers' pairs
# and the end of the timed inference (nothing reads the clock between the last layer and it).
python3 - "$L1" "$L1.out" "${SORT:-0}" <<'EOF'
import re, sys
log, out, sort = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
marks = [int(l.split()[1]) for l in open(log) if l.startswith("mark ")]
layers = []
for l in open(out):
    m = re.match(r"\s+(\d+)\s+([\d.]+)\s+[\d.]+%\s+(.*)", l)
    if m and "(computed by op" not in m.group(3):
        layers.append((int(m.group(1)), m.group(3)))
k = len(layers)
pairs = marks[-(2 * k + 1):-1]
rows = [(i, d, pairs[2 * j + 1] - pairs[2 * j]) for j, (i, d) in enumerate(layers)]
total = sum(r[2] for r in rows)
print(f"{'op':>4} {'insns':>12} {'%':>6}  layer")
for i, d, n in sorted(rows, key=lambda r: -r[2]) if sort else rows:
    print(f"{i:>4} {n:>12} {100 * n / total:>5.1f}%  {d}")
print(f"{'':>4} {total:>12} 100.0%  all {k} layers (the inference: {marks[-1] - marks[-2 * k - 2]})")
EOF

# Functions: per-symbol difference of the two runs, demangled.
echo
echo "functions, instructions per inference:"
join -j 2 -a 2 -e 0 -o 2.2,1.1,2.1 \
    <(awk '/^sym / {print $2, $3}' "$L1" | sort -k2) \
    <(awk '/^sym / {print $2, $3}' "$L2" | sort -k2) |
    awk '{d = $3 - $2; if (d > 0) print d, $1}' | sort -rn | head -n "$TOPSYM" |
    while read -r n s; do printf '%12d  %s\n' "$n" "$(echo "$s" | c++filt)"; done
