#!/usr/bin/env bash
# Builds the Python transform modules into components with componentize-py:
#   guests/python/<name>/<name with - replaced by _>.wasm   (from <name>/app.py)
# Usage: guests/python/build.sh [--force] [module...]   (default: every module directory)
# The world is picked by the class app.py defines: `BatchTransformer` →
# transform-batch, `JsonTransformer` → transform-json, `Transformer` → transform.
#
# Idempotent: installs componentize-py (pinned below) into a venv under
# ${CDC_GUEST_CACHE:-/var/tmp/cdc-host-guests}/py-venv only when it is missing,
# and rebuilds a module only when its sources, the WIT or this script changed (a
# stamp next to the .wasm records their hash). The Python bindings for the WIT
# world are generated during the build (into a scratch copy of the module), never
# into the source tree. Needs python3 (>= 3.10) with pip, and PyPI for the first install.
set -euo pipefail
COMPONENTIZE_PY_VERSION=0.25.1

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
wit=$(cd "$here/../../wit" && pwd)
cache=${CDC_GUEST_CACHE:-/var/tmp/cdc-host-guests}

force=0
modules=()
for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "build.sh: unknown option $arg" >&2; exit 2 ;;
    *) modules+=("${arg%/}") ;;
  esac
done
if [ ${#modules[@]} -eq 0 ]; then
  for d in */; do
    d=${d%/}
    [ -f "$d/app.py" ] && modules+=("$d")
  done
fi

for tool in python3 sha256sum; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool not found" >&2; exit 1; }
done

# 1. The toolchain. A venv when python3 can make one; otherwise (Debian without
# python3-venv) a `pip install --target` directory run through PYTHONPATH.
venv="$cache/py-venv"
target="$cache/py-target"
want="componentize-py $COMPONENTIZE_PY_VERSION"
componentize_py() {
  if [ -x "$venv/bin/componentize-py" ]; then
    env -u VIRTUAL_ENV -u PYTHONPATH "$venv/bin/componentize-py" "$@"
  else
    env -u VIRTUAL_ENV PYTHONPATH="$target" python3 -c \
      'import sys; from componentize_py import script; sys.argv[0] = "componentize-py"; sys.exit(script())' "$@"
  fi
}
have=$(componentize_py --version 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  echo "build.sh: installing componentize-py==$COMPONENTIZE_PY_VERSION into $cache"
  mkdir -p "$cache"
  rm -rf "$venv" "$target"
  if [ "${CDC_GUEST_PY_NO_VENV:-}" != 1 ] && python3 -m venv "$venv" >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      "componentize-py==$COMPONENTIZE_PY_VERSION"
  else
    rm -rf "$venv"
    echo "build.sh: python3 -m venv is not available; using pip install --target"
    brk=()
    if python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages; then
      brk=(--break-system-packages)
    fi
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "${brk[@]}" \
      --target "$target" "componentize-py==$COMPONENTIZE_PY_VERSION"
  fi
  have=$(componentize_py --version)
  [ "$have" = "$want" ] || { echo "build.sh: got '$have', wanted '$want'" >&2; exit 1; }
fi

# 2. The modules whose inputs changed.
for m in "${modules[@]}"; do
  [ -f "$m/app.py" ] || { echo "build.sh: no $m/app.py" >&2; exit 2; }
  out="$here/$m/${m//-/_}.wasm"
  stamp="$here/$m/.${m//-/_}.wasm.inputs"
  h=$( { echo "$want"
         { find "$m" -name '*.py' -type f -not -path '*/__pycache__/*'; find "$wit" -name '*.wit' -type f; echo build.sh; } |
           LC_ALL=C sort | while IFS= read -r f; do echo "== ${f#"$wit/"}"; cat "$f"; done
       } | sha256sum | cut -d' ' -f1)
  if [ $force = 0 ] && [ -f "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$h" ]; then
    echo "build.sh: $m/${m//-/_}.wasm is up to date"
    continue
  fi
  # Build from a scratch copy so neither bindings nor __pycache__ land in the tree.
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/cdc-py-$m.XXXXXX")
  trap 'rm -rf "$scratch"' EXIT
  (cd "$m" && find . -name '*.py' -not -path '*/__pycache__/*' -exec cp --parents {} "$scratch/" \;)
  started=$SECONDS
  # The world follows the class app.py defines: `BatchTransformer` edits its
  # batches in place through the host (wit/batch.wit), `JsonTransformer` takes
  # them as JSON (wit/json.wit), `Transformer` as records (wit/world.wit).
  world=transform
  if grep -q '^class BatchTransformer(' "$m/app.py"; then
    world=transform-batch
  elif grep -q '^class JsonTransformer(' "$m/app.py"; then
    world=transform-json
  fi
  (cd "$scratch" && componentize_py -q -d "$wit" -w "$world" componentize app -p . -o "$out.tmp")
  mv "$out.tmp" "$out"
  echo "$h" > "$stamp"
  rm -rf "$scratch"
  trap - EXIT
  echo "built $out ($(stat -c %s "$out") bytes, $((SECONDS - started))s)"
  # The module's README.md shows its whole source: say so when it no longer does.
  if [ -f "$m/README.md" ] && ! python3 -c 'import sys; sys.exit(open(sys.argv[2]).read().rstrip() not in open(sys.argv[1]).read())' \
      "$m/README.md" "$m/app.py"; then
    echo "build.sh: warning: $m/README.md does not show the current $m/app.py"
  fi
done
