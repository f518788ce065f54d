#!/usr/bin/env bash
# Builds __NAME_.wasm from transform.c: Debian's clang-19 + wasi-libc, and cdc-host's
# c-guest-tool (bindings: bindings/transform.h; componentize with the WASI adapter).
#   CDC_HOST_REPO=/path/to/cdc-host ./build.sh
set -euo pipefail
cd "$(dirname "$0")"
repo=${CDC_HOST_REPO:-__REPO__}
tool_dir=${CARGO_TARGET_DIR:-$repo/target}/guests-c-tools
CARGO_TARGET_DIR=$tool_dir cargo build --quiet --release --locked --manifest-path "$repo/guests/c/tools/Cargo.toml"
tool=$tool_dir/release/c-guest-tool
"$tool" bindgen --wit wit --world transform --out bindings
if [[ -e /usr/lib/wasm32-wasip1/libc.a ]]; then triple=wasm32-wasip1; else triple=wasm32-wasi; fi
clang-19 --target=$triple -mexec-model=reactor -O2 -Wall -Wextra -Wno-unused-parameter \
  -Ibindings -Wl,--strip-debug -o __NAME_.core.wasm transform.c bindings/transform.c bindings/transform_component_type.o
"$tool" componentize --module __NAME_.core.wasm --out __NAME_.wasm
echo "built __NAME_.wasm"
