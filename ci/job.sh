#!/usr/bin/env bash
# One CI matrix job: runs every case on one kernel and writes OUT_DIR/matrix.json,
# matrix.md and matrix.html (default OUT_DIR: reports/KERNEL). It runs the same
# command a user runs, with `--accel auto` so a /dev/kvm that opens but hangs its
# guests still falls back to TCG instead of failing the job.
#
# Exit status: 0 whenever the run got as far as writing matrix.json, even when some
# cells disagree with their expectations (exit 1 of `bpfmatrix run`): the merge job
# reads every kernel's matrix.json and decides. Anything else (usage or setup
# errors, exit 2, or a crash) leaves no matrix.json and fails the job with the CLI's
# own status.
#
# Usage: ci/job.sh KERNEL [OUT_DIR]      e.g. ci/job.sh 6.1
# BPFMATRIX_ACCEL (auto, kvm, tcg; default auto) chooses the accelerator.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 KERNEL [OUT_DIR]" >&2
  exit 2
fi
# Paths are taken from the caller's directory; cargo finds the project from here.
manifest="$(cd "$(dirname "$0")/.." && pwd)/Cargo.toml"
kernel=$1
out=${2:-reports/$kernel}
accel=${BPFMATRIX_ACCEL:-auto}

# A matrix.json left over from an earlier run must not pass for this one's.
rm -f "$out/matrix.json" "$out/matrix.md" "$out/matrix.html"

status=0
cargo run --release --manifest-path "$manifest" --bin bpfmatrix -- run -k "$kernel" --accel "$accel" --out "$out" || status=$?

if [ ! -s "$out/matrix.json" ]; then
  echo "ci/job.sh: bpfmatrix run -k $kernel exited $status and wrote no $out/matrix.json" >&2
  [ "$status" -ne 0 ] || status=1
  exit "$status"
fi
case $status in
  0) echo "ci/job.sh: kernel $kernel: every cell agrees ($out/matrix.json)" ;;
  1) echo "ci/job.sh: kernel $kernel: some cells disagree or the run failed; the merge job decides ($out/matrix.json)" ;;
  *)
    echo "ci/job.sh: bpfmatrix run -k $kernel exited $status" >&2
    exit "$status"
    ;;
esac
