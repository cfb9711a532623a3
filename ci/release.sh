#!/usr/bin/env bash
# Builds the release binary into dist/: bpfmatrix for x86_64 Linux, statically
# linked against musl, and dist/bpfmatrix.sha256 (`sha256sum -c` reads it). The
# release workflow calls it, and `make release` runs it anywhere.
#
# Why static musl: a binary linked against glibc runs only on machines whose glibc
# is as new as the build machine's; a static one has no such coupling and runs on
# any x86_64 Linux. What static glibc would break does not apply: bpfmatrix loads no
# NSS modules (no user or group lookups), its downloads go through apt and curl, and
# its one in-process name lookup (whether a kernel's host resolves, for `bpfmatrix
# kernels`) is answered by musl from /etc/hosts and /etc/resolv.conf. The guest
# agent's sources are compiled into the binary (vm/src/agent.rs); it still needs
# cargo and clang at run time, to build that agent on first use.
#
# Built with the toolchain of the project's rust-version (its MSRV, so every
# release is built by the same compiler whatever the machine's default is).
# liblzma (xz2's lzma-sys) is C, compiled for musl with Debian's musl-gcc
# (package musl-tools, installed through ci/deps.sh when missing: as root).
#
# Usage: ci/release.sh [TAG SERVER_URL REPOSITORY]
#   With a tag (the release workflow's: v1.2.3, which must be v + the version in
#   Cargo.toml), its server (https://github.com) and repository (owner/name),
#   it also writes dist/release-notes.md with the install lines and the `uses:` line.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 0 ] && [ $# -ne 3 ]; then
  echo "usage: $0 [TAG SERVER_URL REPOSITORY]   e.g. $0 v0.1.0 https://github.com owner/bpfmatrix" >&2
  exit 2
fi
target=x86_64-unknown-linux-musl
# jq reads cargo's metadata just below; musl-gcc compiles liblzma.
bash ci/deps.sh musl-tools jq

metadata=$(cargo metadata --offline --no-deps --format-version 1)
field() { jq -r ".packages[] | select(.name == \"bpfmatrix\") | .$1 // empty" <<<"$metadata"; }
version=$(field version)
toolchain=$(field rust_version)
if [ -z "$version" ] || [ -z "$toolchain" ]; then
  echo "ci/release.sh: Cargo.toml's bpfmatrix package has no version or rust-version" >&2
  exit 2
fi
if [ $# -eq 3 ] && [ "$1" != "v$version" ]; then
  echo "ci/release.sh: tag $1 is not this bpfmatrix's version, v$version (Cargo.toml): release tags are v<version>; set the version in Cargo.toml and tag that" >&2
  exit 2
fi

rustup toolchain install "$toolchain" --profile minimal --target "$target"
export CC_x86_64_unknown_linux_musl=musl-gcc
cargo +"$toolchain" build --release --locked --target "$target" --bin bpfmatrix

rm -rf dist
mkdir -p dist
cp "target/$target/release/bpfmatrix" dist/bpfmatrix
(cd dist && sha256sum bpfmatrix >bpfmatrix.sha256)

# Checked as a user gets it: static (no program interpreter, no shared library;
# `file` says "static-pie linked": the musl target links static PIE), and working
# outside this checkout.
linkage=$(file -b dist/bpfmatrix)
if readelf -lW dist/bpfmatrix | grep -q INTERP || readelf -dW dist/bpfmatrix | grep -q NEEDED ||
  ! grep -qE 'statically linked|static-pie linked' <<<"$linkage"; then
  echo "ci/release.sh: dist/bpfmatrix is not statically linked: $linkage" >&2
  readelf -dW dist/bpfmatrix | grep NEEDED >&2 || true
  exit 1
fi
bin=$PWD/dist/bpfmatrix
said=$(cd / && "$bin" --version)
if [ "$said" != "bpfmatrix $version" ]; then
  echo "ci/release.sh: dist/bpfmatrix --version says '$said', expected 'bpfmatrix $version'" >&2
  exit 1
fi
(cd dist && sha256sum -c bpfmatrix.sha256)
echo "ci/release.sh: dist/bpfmatrix, $said for x86_64 Linux, $(stat -c %s dist/bpfmatrix) bytes: $linkage"

[ $# -eq 3 ] || exit 0
tag=$1 url=$2/$3 repository=$3
cat >dist/release-notes.md <<EOF
bpfmatrix $version for x86_64 Linux: one statically linked binary (musl), with its SHA-256.

    curl -fsSLO $url/releases/download/$tag/bpfmatrix
    curl -fsSLO $url/releases/download/$tag/bpfmatrix.sha256
    sha256sum -c bpfmatrix.sha256 && install -D -m 0755 bpfmatrix ~/.local/bin/bpfmatrix

or from source, with cargo:

    cargo install --locked --git $url --tag $tag bpfmatrix

At run time bpfmatrix builds its guest agent (sources inside the binary) with cargo
(Rust $toolchain or newer) and clang, and boots QEMU:
\`sudo apt-get install qemu-system-x86 clang llvm libbpf-dev kmod\`.

In GitHub Actions, after actions/checkout (\`@v${version%%.*}\` follows the newest
v${version%%.*}.x.y release instead):

    - uses: $repository@$tag
      with:
        objects: "**/*.bpf.o"
        kernels: 5.10 6.1 6.12
EOF
echo "ci/release.sh: dist/release-notes.md for $tag of $url"
