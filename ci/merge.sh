#!/usr/bin/env bash
# Merges the per-kernel matrix.json files of the CI jobs into one report folder
# with `bpfmatrix merge` (matrix.json, matrix.md, matrix.html), checks that all
# three were written, and adds matrix.md to the GitHub job summary when run in
# Actions ($GITHUB_STEP_SUMMARY). The workflow's merge job and .ci/run both call it.
#
# Exit status: that of `bpfmatrix merge`, 1 when any cell disagrees, any kernel
# run failed or a required kernel is not covered; 2 when there is nothing to
# merge, an option is wrong, an input is refused (a stored verdict that does not
# hold up when judged again, a planned cell missing) or a report file is missing.
#
# Usage: ci/merge.sh [OUT_DIR [MATRIX_JSON...]]   (run from the repository root in CI)
#   defaults: OUT_DIR=merged, MATRIX_JSON=reports/*/matrix.json
#   BPFMATRIX_REQUIRE=4.16,5.4,...: kernels that must be covered (--require): each
#   must have a report (a missing one means its job crashed before writing
#   matrix.json), must have been obtained, and must have a guest record for every
#   case in both JIT modes, or the merge fails naming the kernel and what it lacks.
#   BPFMATRIX_ALLOW_UNAVAILABLE=4.16,...: required kernels that may be unavailable
#   on this machine (--allow-unavailable); they still show as unavailable. Empty or
#   unset: none. Allowed unavailable is not allowed incomplete.
set -euo pipefail
# Paths are taken from the caller's directory; cargo finds the project from here.
manifest="$(cd "$(dirname "$0")/.." && pwd)/Cargo.toml"
out=${1:-merged}
shift || true
inputs=("$@")
if [ ${#inputs[@]} -eq 0 ]; then
  shopt -s nullglob
  inputs=(reports/*/matrix.json)
  shopt -u nullglob
fi
if [ ${#inputs[@]} -eq 0 ]; then
  echo "ci/merge.sh: no matrix.json to merge (looked for reports/*/matrix.json)" >&2
  exit 2
fi
echo "ci/merge.sh: merging ${inputs[*]} into $out/" >&2

rm -f "$out/matrix.json" "$out/matrix.md" "$out/matrix.html"
status=0
coverage=()
[ -z "${BPFMATRIX_REQUIRE:-}" ] || coverage+=(--require "$BPFMATRIX_REQUIRE")
if [ -n "${BPFMATRIX_ALLOW_UNAVAILABLE:-}" ]; then
  coverage+=(--allow-unavailable "$BPFMATRIX_ALLOW_UNAVAILABLE")
  echo "ci/merge.sh: required kernels allowed to be unavailable: $BPFMATRIX_ALLOW_UNAVAILABLE" >&2
fi
cargo run --release --manifest-path "$manifest" --bin bpfmatrix -- merge "${inputs[@]}" --out "$out" "${coverage[@]}" || status=$?

if [ -n "${GITHUB_STEP_SUMMARY:-}" ] && [ -f "$out/matrix.md" ]; then
  cat "$out/matrix.md" >>"$GITHUB_STEP_SUMMARY"
fi
for f in matrix.json matrix.md matrix.html; do
  if [ ! -s "$out/$f" ]; then
    echo "ci/merge.sh: $out/$f was not written (bpfmatrix merge exited $status)" >&2
    [ "$status" -ne 0 ] || status=2
  fi
done
if [ "$status" -eq 0 ]; then
  echo "ci/merge.sh: every cell agrees${BPFMATRIX_REQUIRE:+ and every required kernel is covered}; report in $out/"
else
  echo "ci/merge.sh: bpfmatrix merge exited $status; report in $out/" >&2
fi
exit "$status"
