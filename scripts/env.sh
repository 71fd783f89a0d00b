# shellcheck shell=bash
# Sourced by the scripts: one persistent build directory outside the clone (a clean build compiles
# DuckDB's C++ for ~12 minutes; later builds reuse it).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/twilight-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
