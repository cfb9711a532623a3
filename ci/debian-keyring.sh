#!/usr/bin/env bash
# Makes sure the Debian suites a plan names verify with the keyring bpfmatrix's apt
# uses (/usr/share/keyrings/debian-archive-keyring.gpg, named with signed-by in its
# private apt configuration), and fails naming the suite when one does not.
#
# A suite verifies when its InRelease carries a good signature by its own release's
# key ("Debian ... (13/trixie)"), not only a co-signature by an older release's;
# suites without a release of their own (sid, testing: no Version field) need any
# good one. Ubuntu 24.04's debian-archive-keyring (2023.4ubuntu1) has no Debian 13
# key, so trixie verifies there only while bookworm's key still co-signs it. When
# the machine's keyring does not verify every suite, Debian's own current keyring
# (Debian 11, 12 and 13 keys) is put at that path, and only there: no apt source
# or trusted key of the machine changes. A keyring that verifies them already is
# left as it is (a Debian host's own, kept up to date by its package).
#
# The package's SHA-256 is the one in sid's and trixie's signed Packages index
# (checked when this was written); the file leaves deb.debian.org's pool once
# Debian replaces 2025.1 in every suite, and then comes from snapshot.debian.org,
# whose copy stays.
#
# Usage: ci/debian-keyring.sh PLAN.json   (a document of `bpfmatrix kernels --json`)
# Needs jq, curl, gpgv and dpkg-deb; installing the keyring needs root (sudo is
# used when not root). BPFMATRIX_DEBIAN_MIRROR is honoured as bpfmatrix honours it.
set -euo pipefail
if [ $# -ne 1 ] || [ ! -s "$1" ]; then
  echo "usage: $0 PLAN.json (the output of \`bpfmatrix kernels --json\`)" >&2
  exit 2
fi
plan=$1
deb_name=debian-archive-keyring_2025.1_all.deb
deb_sha256=9ea7778e443144ca490668737a8ab22dd3e748bb99e805e22ec055abeb3c7fac
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mirror=${BPFMATRIX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
mirror=${mirror%/}

mapfile -t suites < <(jq -r '[.kernels[].source | select(.kind == "debian") | .suite] | unique | .[]' "$plan")
if [ ${#suites[@]} -eq 0 ]; then
  echo "ci/debian-keyring.sh: no Debian kernel in $plan: no keyring needed"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A suite that cannot be read here is left to bpfmatrix, which reports its kernel
# unavailable (a cell never passes on an unread source) and whose apt checks the
# signature of whatever it does fetch.
reachable=()
for suite in "${suites[@]}"; do
  if curl -fsSL --retry 3 -o "$work/$suite.InRelease" "$mirror/dists/$suite/InRelease"; then
    reachable+=("$suite")
  else
    echo "::warning title=Debian keyring::cannot download $mirror/dists/$suite/InRelease: $suite not checked here (bpfmatrix will say whether it can fetch it)"
  fi
done
if [ ${#reachable[@]} -eq 0 ]; then
  exit 0
fi
suites=("${reachable[@]}")

# Prints why SUITE does not verify with KEYRING, or nothing when it does.
why_not() {
  local ring=$1 suite=$2 release=$work/$2.InRelease good
  [ -s "$ring" ] || { echo "$ring does not exist"; return; }
  good=$(gpgv --status-fd 1 --keyring "$ring" "$release" 2>/dev/null | sed -n 's/^\[GNUPG:\] GOODSIG [0-9A-F]* //p' || true)
  if [ -z "$good" ]; then
    echo "$suite's Release has no good signature with $ring"
  elif grep -q '^Version: ' "$release" && ! grep -qF "/$suite)" <<<"$good"; then
    echo "$suite's Release has no good signature by $suite's own key with $ring; good signatures: $(paste -sd ';' <<<"$good")"
  fi
}

# Whether every suite verifies with KEYRING; prints each one's signers, or why not.
all_verify() {
  local ring=$1 suite reason ok=0
  for suite in "${suites[@]}"; do
    reason=$(why_not "$ring" "$suite")
    if [ -n "$reason" ]; then
      echo "  $reason"
      ok=1
    else
      echo "  $suite: $(gpgv --status-fd 1 --keyring "$ring" "$work/$suite.InRelease" 2>/dev/null |
        sed -n 's/^\[GNUPG:\] GOODSIG [0-9A-F]* //p' | paste -sd ';')"
    fi
  done
  return "$ok"
}

echo "ci/debian-keyring.sh: ${suites[*]} with $keyring:"
if all_verify "$keyring"; then
  echo "ci/debian-keyring.sh: every suite verifies with $keyring as it is"
  exit 0
fi

deb=$work/$deb_name
for url in \
  "$mirror/pool/main/d/debian-archive-keyring/$deb_name" \
  "https://snapshot.debian.org/archive/debian/20250601T000000Z/pool/main/d/debian-archive-keyring/$deb_name"; do
  curl -fsSL --retry 3 -o "$deb" "$url" && break
  echo "ci/debian-keyring.sh: cannot download $url" >&2
  rm -f "$deb"
done
[ -s "$deb" ] || { echo "ci/debian-keyring.sh: no copy of $deb_name could be downloaded" >&2; exit 1; }
echo "$deb_sha256  $deb" | sha256sum -c -
dpkg-deb -x "$deb" "$work/keyring"
new=$work/keyring/usr/share/keyrings/debian-archive-keyring.pgp
echo "ci/debian-keyring.sh: ${suites[*]} with $deb_name:"
if ! all_verify "$new"; then
  echo "::error title=Debian keyring::${suites[*]}: not every suite verifies with $deb_name either (above): bpfmatrix would not trust them"
  exit 1
fi
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
"${as_root[@]}" install -D -m 0644 "$new" "$keyring"
echo "ci/debian-keyring.sh: installed $deb_name's keyring as $keyring"
