#!/usr/bin/env bash
# Lets the current user open /dev/kvm, with the udev rule GitHub documents for its
# hosted Linux runners (there /dev/kvm belongs to root:kvm and the runner user is
# not in that group). Without it QEMU falls back to TCG, which works but is many
# times slower. Harmless on a machine without /dev/kvm: bpfmatrix's `--accel auto`
# then runs under TCG and says so.
set -euo pipefail
if [ ! -e /dev/kvm ]; then
  echo "no /dev/kvm on this machine: guests will run under TCG" >&2
  exit 0
fi
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"' |
  "${sudo[@]}" tee /etc/udev/rules.d/99-kvm4all.rules >/dev/null
"${sudo[@]}" udevadm control --reload-rules
"${sudo[@]}" udevadm trigger --name-match=kvm
# udevadm trigger is asynchronous: wait for the new mode before going on.
"${sudo[@]}" udevadm settle || true
ls -l /dev/kvm
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
  echo "/dev/kvm is usable by $(id -un)"
else
  echo "warning: /dev/kvm is still not read-write for $(id -un): guests will run under TCG" >&2
fi
