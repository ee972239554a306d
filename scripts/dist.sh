#!/bin/sh
# Builds the release binary for a board and packs it with the board profile, the systemd unit
# and the models README into target/dist/facegate-BOARD.tar.gz. The model weights are never
# packed (see models/README.md).
#
#   scripts/dist.sh rpi5            # boards/rpi5.toml -> target/dist/facegate-rpi5.tar.gz
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
install -m 0644 "$root/models/README.md" "$stage/usr/local/share/facegate/models/README.md"
install -m 0644 "$root/models/MANIFEST.md" "$stage/usr/local/share/facegate/models/MANIFEST.md"
tarball="$out/facegate-$board.tar.gz"
tar -C "$stage" --owner=0 --group=0 -czf "$tarball" .
echo "== $tarball" >&2
tar -tzvf "$tarball" >&2
