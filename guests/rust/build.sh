#!/usr/bin/env bash
# Builds the Rust example transforms as wasm32-wasip2 components (release) and
# copies each to guests/rust/<name>/<name with - as _>.wasm, e.g.
# guests/rust/mask-columns/mask_columns.wasm.
#
# * Honours CARGO_TARGET_DIR: builds in "$CARGO_TARGET_DIR/guests-rust" so it
#   does not fight the host build over the same directory (default:
#   guests/rust/target).
# * Installs the wasm32-wasip2 target only when it is missing.
# * Idempotent: cargo skips what is up to date, and a .wasm is copied only
#   when its content changed (so its mtime says when it last changed).
# * --locked: builds exactly what Cargo.lock says.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

target=wasm32-wasip2
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx "$target"; then
        rustup target add "$target"
    fi
fi

if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/guests-rust"
else
    export CARGO_TARGET_DIR="$here/target"
fi

cargo build --locked --release --target "$target" --workspace

out="$CARGO_TARGET_DIR/$target/release"
for manifest in */Cargo.toml; do
    name="${manifest%/Cargo.toml}"
    [[ "$name" == sdk ]] && continue
    file="${name//-/_}.wasm"
    if ! cmp -s "$out/$file" "$name/$file"; then
        cp "$out/$file" "$name/$file"
    fi
    printf '%8d  guests/rust/%s/%s\n' "$(stat -c %s "$name/$file")" "$name" "$file"
done
