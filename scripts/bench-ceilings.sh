#!/bin/bash
# Issue 12: what the gateway could reach if part of a call's work cost nothing. Each patch in
# scripts/ceilings/ removes one piece of work (it breaks a guarantee on purpose, so it is
# never merged); this builds the patched gateway in a throwaway worktree, then runs it
# alternated with this checkout's own build (scripts/bench-ab.sh, SQLite), each figure with
# the in-process echo baseline of the same run. docs/benchmarks.md, "Ceilings".
#   scripts/bench-ceilings.sh [PATCH ...] [-- ROUNDS]
# A patch that no longer applies is remade against the code it names (git diff).
set -e
cd "$(dirname "$0")/.."
ROOT=$PWD
PATCHES=() ROUNDS=2
while [ $# -gt 0 ]; do
  case $1 in
    --) ROUNDS=$2; shift 2 ;;
    *) PATCHES+=("$1"); shift ;;
  esac
done
[ ${#PATCHES[@]} -gt 0 ] || PATCHES=(scripts/ceilings/*.patch)
OUT=/tmp/jisr-ceilings && mkdir -p $OUT
cargo build --release --quiet && cp target/release/jisr "$OUT/jisr-main"
for patch in "${PATCHES[@]}"; do
  name=$(basename "$patch" .patch)
  tree=$OUT/tree
  git worktree remove --force "$tree" 2>/dev/null || true
  git worktree add --quiet --detach "$tree" HEAD
  git -C "$tree" apply "$ROOT/$patch"
  # A target directory of its own: sharing this checkout's would let cargo take the
  # patched build for this checkout's next one (it compares file times, not contents).
  CARGO_TARGET_DIR=$ROOT/target/ceilings cargo build --release --quiet --manifest-path "$tree/Cargo.toml"
  cp target/ceilings/release/jisr "$OUT/jisr-$name"
  git worktree remove --force "$tree"
  echo "=== $name: before = this checkout, after = with $patch"
  scripts/bench-ab.sh sqlite "$OUT/jisr-main" "$OUT/jisr-$name" "$ROUNDS"
done
