#!/usr/bin/env bash
# Builds the C transforms: guests/c/<name>/<name_>.wasm for every module below
# (a directory holding <name_>.c, `-` in the name written `_`). A module is
# built for world `transform-batch` (wit/batch.wit) when its source includes
# "transform_batch.h", for world `transform` (wit/world.wit) otherwise.
#
#   guests/c/build.sh            build every module
#   guests/c/build.sh identity   build the named ones
#
# Steps: Debian's clang-19, lld-19, compiler-rt for wasm32 and wasi-libc
# (installed when missing, if we are root); c-guest-tool (guests/c/tools, its
# own cargo workspace) generates the C bindings for wit/ and wraps the core
# module into a component with wasmtime 48.0.8's WASI reactor adapter.
#
# Everything generated goes under ${CARGO_TARGET_DIR:-<repo>/target}: the tool
# in guests-c-tools/, the bindings in guests-c/bindings/<world>/, core modules
# in guests-c/. A module is rebuilt only when its source, its world's bindings,
# the tool or this script changed, so a second run does next to nothing.
#
# Environment: CC (default clang-19), CFLAGS (default -O2).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
work=$target/guests-c
CC=${CC:-clang-19}
CFLAGS=${CFLAGS:--O2}

log() { printf 'guests/c: %s\n' "$*" >&2; }

# --- toolchain ---------------------------------------------------------------
packages=(clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]]; then
    log "missing Debian packages: ${missing[*]}"
    log "install them as root:  apt-get install -y ${missing[*]}"
    exit 1
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# wasi-libc's layout names the target: Debian 12 has wasm32-wasi (WASI
# preview 1 by its old name); newer ones have wasm32-wasip1.
if [[ -e /usr/lib/wasm32-wasip1/libc.a ]]; then triple=wasm32-wasip1; else triple=wasm32-wasi; fi

# --- c-guest-tool ------------------------------------------------------------
CARGO_TARGET_DIR=$target/guests-c-tools \
  cargo build --quiet --release --locked --manifest-path "$here/tools/Cargo.toml"
tool=$target/guests-c-tools/release/c-guest-tool

# --- bindings (rewritten only when they change) ------------------------------
# One directory per world: $work/bindings/<world>/<world_>.{h,c} and
# <world_>_component_type.o. Both worlds are generated every time (a few ms).
worlds=(transform transform-batch)
for world in "${worlds[@]}"; do
  "$tool" bindgen --wit "$root/wit" --world "$world" --out "$work/bindings/$world"
done
# Where the single world's bindings went before there were two: gone, so that
# nothing (an -I left in a script) picks up a stale copy.
rm -f "$work/bindings/transform.h" "$work/bindings/transform.c" "$work/bindings/transform_component_type.o"

# The world a module's source is written for: the header it includes.
world_of() {
  if grep -Eq '^[[:space:]]*#[[:space:]]*include[[:space:]]*"transform_batch\.h"' "$1"; then
    echo transform-batch
  else
    echo transform
  fi
}

# --- modules -----------------------------------------------------------------
if (($#)); then names=("$@"); else
  names=()
  for d in "$here"/*/; do
    n=$(basename "$d")
    [[ -f $d/${n//-/_}.c ]] && names+=("$n")
  done
fi

for name in "${names[@]}"; do
  base=${name//-/_}
  src=$here/$name/$base.c
  out=$here/$name/$base.wasm
  core=$work/$base.core.wasm
  [[ -f $src ]] || { log "no $src"; exit 1; }
  # The module's README shows its whole source: say so when it no longer does.
  if [[ -f $here/$name/README.md ]] &&
    ! awk '/^```c$/ { f = 1; next } /^```$/ && f { exit } f' "$here/$name/README.md" | cmp -s - "$src"; then
    log "warning: $name/README.md does not show the current $base.c"
  fi
  world=$(world_of "$src")
  bindings=$work/bindings/$world
  w=${world//-/_}  # the generated files' stem
  stale=0
  for dep in "$src" "$bindings/$w.h" "$bindings/$w.c" \
    "$bindings/${w}_component_type.o" "$tool" "${BASH_SOURCE[0]}"; do
    [[ $out -nt $dep ]] || { stale=1; break; }
  done
  if ((stale == 0)); then continue; fi
  log "building $name (world $world)"
  # -mexec-model=reactor: a library with exports and no main (crt1-reactor.o's
  # _initialize runs the constructors; the component calls it at instantiation).
  # --strip-debug keeps the component-type custom section the bindings link in.
  "$CC" --target="$triple" -mexec-model=reactor $CFLAGS \
    -Wall -Wextra -Wno-unused-parameter \
    -I"$bindings" -Wl,--strip-debug \
    -o "$core" "$src" "$bindings/$w.c" "$bindings/${w}_component_type.o"
  "$tool" componentize --module "$core" --out "$out"
  touch "$out"  # the tool leaves an unchanged file alone; mark it up to date
  log "wrote ${out#"$root"/} ($(wc -c <"$out") bytes)"
done
