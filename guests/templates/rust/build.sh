#!/usr/bin/env bash
# Builds __NAME_.wasm (a wasm32-wasip2 component). Needs `rustup target add wasm32-wasip2`.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/__NAME_.wasm" .
echo "built __NAME_.wasm"
