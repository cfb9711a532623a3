# The three ways to run bpfmatrix. `deps` installs the Debian packages the guests
# need when they are missing (as root; otherwise it prints the command to run).

CARGO ?= cargo
REPORT_DIR ?= reports
DEBIAN_PACKAGES := qemu-system-x86 clang llvm libbpf-dev kmod

.PHONY: matrix test bench check deps

## Boot every kernel, run every case, print the matrix and write $(REPORT_DIR)/.
matrix: deps
	$(CARGO) run --release --bin bpfmatrix -- run --out $(REPORT_DIR)

## The integration trials: one per kernel x JIT mode x case, in real guests.
test: deps
	$(CARGO) test --features vm
	$(CARGO) test -p bpfmatrix-agent

## One run of the benchmark: boot floor, bpfmatrix, virtme-ng, ratios; JSON too.
bench: deps
	$(CARGO) run --release --bin bpfmatrix -- bench --json $(REPORT_DIR)/bench.json

## Formatting and lints, as CI checks them.
check:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --features vm -- -D warnings

deps:
	@bash ci/deps.sh $(DEBIAN_PACKAGES)
