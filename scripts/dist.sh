#!/bin/sh
# Builds the release binary for a board and packs it with the board profile, the systemd unit,
# the models README and the board's threshold file (the threshold measured for its recogniser
# file) into target/dist/facegate-BOARD.tar.gz. The model weights are never packed into it (see
# models/README.md): with ONNX_DIR set, the board's model files are converted into models/
# (int8 calibrated on CALIB, default ../shared/data/faces/celeba_wild/calibration.txt; cached:
# converted once) and copied to target/dist/facegate-BOARD-models/, for your own boards only.
#
#   scripts/dist.sh rpi5            # boards/rpi5.toml -> target/dist/facegate-rpi5.tar.gz
#   ONNX_DIR=../shared/models/onnx scripts/dist.sh rpi4
#
# The target triple comes from the profile's [board] target; cross linkers are configured in
# .cargo/config.toml (aarch64: aarch64-linux-gnu-gcc). Extra cargo flags: CARGO_FLAGS.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 BOARD   (one of: $(ls boards | sed -n 's/\.toml$//p' | tr '\n' ' '))" >&2
    exit 2
fi
board=$1
root=$(cd "$(dirname "$0")/.." && pwd)
profile="$root/boards/$board.toml"
if [ ! -f "$profile" ]; then
    echo "$0: no board profile $profile" >&2
    exit 2
fi

# `target = "..."` inside the [board] table.
triple=$(awk '
    /^[[:space:]]*\[/ { in_board = ($0 ~ /^[[:space:]]*\[board\][[:space:]]*$/) ; next }
    in_board && /^[[:space:]]*target[[:space:]]*=/ {
        sub(/^[^=]*=[[:space:]]*"/, ""); sub(/".*$/, ""); print; exit
    }' "$profile")
if [ -z "$triple" ]; then
    echo "$0: $profile has no [board] target" >&2
    exit 2
fi

echo "== $board: cargo build --release --target $triple" >&2
# shellcheck disable=SC2086
(cd "$root" && cargo build --release --locked --target "$triple" --bin facegate ${CARGO_FLAGS:-})
bin="$root/target/$triple/release/facegate"
[ -x "$bin" ] || { echo "$0: $bin was not built" >&2; exit 1; }

out="$root/target/dist"
stage="$out/facegate-$board"
rm -rf "$stage"
mkdir -p "$stage/usr/local/bin" "$stage/etc/facegate" \
    "$stage/etc/systemd/system" "$stage/usr/local/share/facegate/models"
install -m 0755 "$bin" "$stage/usr/local/bin/facegate"
install -m 0644 "$profile" "$stage/etc/facegate/board.toml"
install -m 0644 "$root/dist/facegate-unlock.service" "$stage/etc/systemd/system/facegate-unlock.service"
# Only used by a fleet door (a [fleet] table in the profile); see its header.
install -m 0644 "$root/dist/facegate-sync.service" "$stage/etc/systemd/system/facegate-sync.service"
install -m 0644 "$root/models/README.md" "$stage/usr/local/share/facegate/models/README.md"
install -m 0644 "$root/models/MANIFEST.md" "$stage/usr/local/share/facegate/models/MANIFEST.md"

# `key = "..."` inside the [models] / [match] tables.
value() {
    awk -v table="$1" -v key="$2" '
        /^[[:space:]]*\[/ { in_t = ($0 ~ ("^[[:space:]]*\\[" table "\\][[:space:]]*$")) ; next }
        in_t && $0 ~ ("^[[:space:]]*" key "[[:space:]]*=") {
            sub(/^[^=]*=[[:space:]]*"/, ""); sub(/".*$/, ""); print; exit
        }' "$profile"
}
det=$(value models detector)
rec=$(value models recognizer)
precision=$(value models precision)
thr=$(value match threshold_file)
[ -n "$thr" ] || thr="$(dirname "$rec")/threshold-$(basename "$rec" .safetensors).json"
case "$thr" in /*) ;; *) thr="$root/$thr" ;; esac
if [ -f "$thr" ]; then
    install -m 0644 "$thr" "$stage/usr/local/share/facegate/models/$(basename "$thr")"
else
    echo "$0: warning: $thr is missing: the board will refuse to start until it is measured (facegate threshold)" >&2
fi
if [ -n "${ONNX_DIR:-}" ]; then
    calib=${CALIB:-$root/../shared/data/faces/celeba_wild/calibration.txt}
    (cd "$root" && cargo build --release --locked -p quantize --bin quantize)
    for pair in "det_500m:$det" "mobilefacenet_512:$rec"; do
        name=${pair%%:*}
        file=${pair#*:}
        case "$file" in /*) ;; *) file="$root/$file" ;; esac
        if [ ! -f "$file" ]; then
            echo "== converting $ONNX_DIR/$name.onnx -> $file ($precision)" >&2
            if [ "$precision" = int8 ]; then
                "$root/target/release/quantize" --onnx "$ONNX_DIR/$name.onnx" --out "$file" \
                    --precision int8 --calib "$calib"
            else
                "$root/target/release/quantize" --onnx "$ONNX_DIR/$name.onnx" --out "$file" \
                    --precision "$precision"
            fi
        fi
        mkdir -p "$out/facegate-$board-models"
        install -m 0644 "$file" "$out/facegate-$board-models/$(basename "$file")"
    done
    echo "== model files for your own board (never redistribute): $out/facegate-$board-models" >&2
fi
tarball="$out/facegate-$board.tar.gz"
tar -C "$stage" --owner=0 --group=0 -czf "$tarball" .
echo "== $tarball" >&2
tar -tzvf "$tarball" >&2
