#!/usr/bin/env bash
# Builds the JavaScript transform modules into components:
#   guests/js/<name>/<name with - replaced by _>.wasm
# Usage: guests/js/build.sh [--force] [module...]   (default: every module directory)
#
# Idempotent: installs the pinned toolchain (package-lock.json) into
# guests/js/node_modules with `npm ci` only when it is missing or the lockfile
# changed, and rebuilds a module only when its sources, the WIT, the lockfile or
# the build scripts changed (a stamp next to the .wasm records their hash).
# Needs node (>= 20) and npm, and the npm registry for the first install.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
wit="$here/../../wit"

force=0
modules=()
for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    -*) echo "build.sh: unknown option $arg" >&2; exit 2 ;;
    *) modules+=("${arg%/}") ;;
  esac
done
if [ ${#modules[@]} -eq 0 ]; then
  for d in */; do
    d=${d%/}
    [ "$d" = node_modules ] && continue
    if [ -f "$d/$d.js" ] || [ -f "$d/index.js" ]; then modules+=("$d"); fi
  done
fi

for tool in node npm sha256sum; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool not found" >&2; exit 1; }
done
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "build.sh: node $(node --version) is too old: componentize-js needs node 20 or later" >&2
  exit 1
fi


# 1. The toolchain, exactly as locked.
lock_hash=$(cat package.json package-lock.json .npmrc | sha256sum | cut -d' ' -f1)
if [ ! -f node_modules/.cdc-lock.sha256 ] || [ "$(cat node_modules/.cdc-lock.sha256)" != "$lock_hash" ]; then
  echo "build.sh: npm ci (componentize-js toolchain)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_hash" > node_modules/.cdc-lock.sha256
fi

# 2. The modules whose inputs changed.
stale=()
for m in "${modules[@]}"; do
  [ -d "$m" ] || { echo "build.sh: no module directory $m" >&2; exit 2; }
  out="$m/${m//-/_}.wasm"
  stamp="$m/.${m//-/_}.wasm.inputs"
  h=$( { echo "$lock_hash"
         { find "$m" -name '*.js' -type f; find "$wit" -name '*.wit' -type f; echo build.mjs; echo build.sh; } |
           LC_ALL=C sort | while IFS= read -r f; do echo "== ${f#"$here/"}"; cat "$f"; done
       } | sha256sum | cut -d' ' -f1)
  if [ $force = 1 ] || [ ! -f "$out" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$h" ]; then
    stale+=("$m")
    echo "$h" > "$stamp.new"
  else
    echo "build.sh: $out is up to date"
  fi
done
[ ${#stale[@]} -eq 0 ] && exit 0

node build.mjs "${stale[@]}"
for m in "${stale[@]}"; do
  mv "$m/.${m//-/_}.wasm.inputs.new" "$m/.${m//-/_}.wasm.inputs"
done

# Each module's README.md shows its whole source: say so when it no longer does.
for m in "${stale[@]}"; do
  for src in "$m/$m.js" "$m/index.js"; do
    [ -f "$src" ] && [ -f "$m/README.md" ] || continue
    node -e 'const fs = require("fs"); process.exit(fs.readFileSync(process.argv[1], "utf8").includes(fs.readFileSync(process.argv[2], "utf8").trimEnd()) ? 0 : 1)' \
      "$m/README.md" "$src" || echo "build.sh: warning: $m/README.md does not show the current $src"
  done
done
