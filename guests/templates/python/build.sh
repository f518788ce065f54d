#!/usr/bin/env bash
# Builds __NAME_.wasm from app.py against wit/ (cdc:pipeline@0.2.0). Needs
# componentize-py 0.25.1 (`pip install componentize-py==0.25.1`).
# `./build.sh bindings` writes the typed bindings (wit_world/) for your editor.
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = bindings ]; then
  componentize-py -d wit -w transform-batch bindings .
  exit
fi
componentize-py -d wit -w transform-batch componentize app -p . -o __NAME_.wasm
