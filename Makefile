# The three ways to run bpfmatrix. `deps` installs the Debian packages the guests
# need when they are missing (as root; otherwise it prints the command to run);
# `deps-vng` adds what virtme-ng needs, for the targets that run it.

CARGO ?= cargo
REPORT_DIR ?= reports
DEBIAN_PACKAGES := qemu-system-x86 clang llvm libbpf-dev kmod
# virtme-ng (installed from PyPI into the cache by bpfmatrix) builds an initramfs
# around a statically linked busybox (it refuses a dynamic one) and runs `file` to
# read the kernel's release and busybox's linkage; its guest runs the host's own
# systemd-udevd (package udev), without which /dev/virtio-ports/ stays empty: the
# command then runs on a console nobody reads and vng exits 255 without a word.
# python3-venv installs virtme-ng.
VNG_PACKAGES := busybox-static file udev python3-venv
# vmtest (installed from crates.io into the cache by the bench) runs its command
# through QEMU's guest agent, qemu-ga, from the host's root.
BENCH_PACKAGES := qemu-guest-agent

.PHONY: matrix test bench check example release deps deps-vng deps-bench

## Boot every kernel, run every case, print the matrix and write $(REPORT_DIR)/.
matrix: deps
	$(CARGO) run --release --bin bpfmatrix -- run --out $(REPORT_DIR)

## The integration trials: one per kernel x JIT mode x case, in real guests.
test: deps-vng
	$(CARGO) test --features vm
	$(CARGO) test -p bpfmatrix-agent

## One run of the benchmark: boot floor, bpfmatrix, virtme-ng, exec and vmtest,
## ratios; JSON too.
bench: deps-bench
	$(CARGO) run --release --bin bpfmatrix -- bench --json $(REPORT_DIR)/bench.json

## examples/aya-app's own `cargo test` run inside 5.10, 6.1 and 6.12 through
## `bpfmatrix exec` as cargo's runner: its tests by kernels.
## Its binaries go into the cache: a checkout under /tmp would put them where the
## guests do not look (their /tmp is their own).
EXAMPLE_KERNELS ?= -k 5.10 -k 6.1 -k 6.12
EXAMPLE_TARGET_DIR ?= $(or $(BPFMATRIX_CACHE),$(HOME)/.cache/bpfmatrix)/examples/aya-app
example: deps
	$(CARGO) build --release --bin bpfmatrix
	cd examples/aya-app && CARGO_TARGET_DIR="$(EXAMPLE_TARGET_DIR)" CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$(CURDIR)/target/release/bpfmatrix exec $(EXAMPLE_KERNELS) --format libtest --" $(CARGO) test

## Formatting and lints, as CI checks them.
check:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --features vm -- -D warnings

## dist/bpfmatrix: a statically linked (musl) bpfmatrix for x86_64 Linux, and its
## SHA-256 in dist/bpfmatrix.sha256, as the release workflow attaches them.
release:
	bash ci/release.sh

deps:
	@bash ci/deps.sh $(DEBIAN_PACKAGES)

deps-vng:
	@bash ci/deps.sh $(DEBIAN_PACKAGES) $(VNG_PACKAGES)

deps-bench:
	@bash ci/deps.sh $(DEBIAN_PACKAGES) $(VNG_PACKAGES) $(BENCH_PACKAGES)
