#!/usr/bin/env bash
# Runs the composite action in action.yml here, step by step, the way a GitHub runner
# runs it, since no runner can be reached from this machine:
# - each `run:` block goes to a file run by `bash --noprofile --norc -eo pipefail`
#   in the workspace (this repository), with the step's `env:`, the runner's
#   variables (GITHUB_WORKSPACE and GITHUB_ACTION_PATH: this repository;
#   RUNNER_TEMP: a temporary folder) and fresh GITHUB_OUTPUT, GITHUB_ENV,
#   GITHUB_PATH and GITHUB_STEP_SUMMARY files; what a step writes to GITHUB_ENV and
#   GITHUB_PATH applies to the later steps, its GITHUB_OUTPUT becomes
#   steps.ID.outputs, its summary is added to the job summary;
# - `uses:` steps are emulated by saying what they would do: actions/cache/restore
#   and save name the key and the folders (here the machine's own folders stand in
#   for the cache: nothing is restored, so cache-hit is never true), and
#   actions/upload-artifact checks that its folder exists and is not empty;
# - `if:` is evaluated as GitHub does, an implicit success() included, so a failed
#   step skips the later steps that do not ask for always() or !cancelled().
#
# To stay honest it evaluates only the expressions action.yml is written with, and
# fails on anything else, naming it, before the first step runs, rather than drift
# from the action: `${{ }}` only in `env:` and `with:` values and in `if:`; values
# inputs.NAME, steps.ID.outputs.NAME, github.action_path, github.action_ref and
# github.action_repository (both empty: the action is used from this checkout, as
# `uses: ./`), 'literals'; conditions of those joined by ==, !=, && and ||, and
# always(), success(), failure(), cancelled(), each optionally negated with !. The
# emulated actions are those majors exactly, their inputs checked by name.
#
# The action's inputs come from INPUT_NAME variables (upper case; unset means the
# input's default; one that names no input is an error). Composite steps do not
# see them on a runner, so they are removed from the steps' environment here too.
#
# Exit status: 0 when every step succeeded, else the status of the first step that
# failed (an emulated action that fails counts 1); 2 for a bad use of this script.
#
# Usage: INPUT_OBJECTS=clock.o INPUT_KERNELS="6.1 6.12" ci/action-local.sh [--summary FILE]
#   --summary FILE  write the job summary there (default: only printed at the end)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
action_file=$repo/action.yml

summary_out=
while [ $# -gt 0 ]; do
  case $1 in
    --summary)
      [ $# -ge 2 ] || { echo "ci/action-local.sh: --summary needs a file" >&2; exit 2; }
      summary_out=$2
      shift 2
      ;;
    *)
      echo "usage: INPUT_NAME=VALUE... $0 [--summary FILE]" >&2
      exit 2
      ;;
  esac
done

die() {
  echo "ci/action-local.sh: $*" >&2
  exit 2
}

command -v jq >/dev/null || die "jq not found: it reads action.yml's steps here (Debian: apt-get install jq)"

# The YAML parser of the linter's virtualenv (ci/lint.sh), so the machine's Python
# stays untouched.
venv=$repo/target/ci-venv
if ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --only-binary=:all: 'pyyaml>=6,<7'
fi
action=$("$venv/bin/python" -c 'import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))' "$action_file") ||
  die "cannot read $action_file as YAML"
q() { jq -r "$@" <<<"$action"; }

[ "$(q '.runs.using')" = composite ] || die "$action_file is not a composite action (runs.using: $(q '.runs.using'))"

# Every `${{` must be where this script evaluates it.
# shellcheck disable=SC2016 # a jq program
misplaced=$(q 'paths(type == "string") as $p | select(getpath($p) | contains("${{")) | $p | map(tostring) | join(".")' |
  grep -Ev '^runs\.steps\.[0-9]+\.(env|with)\.[^.]+$|^runs\.steps\.[0-9]+\.if$' || true)
[ -z "$misplaced" ] || die "\${{ }} outside env:, with: and if: in $action_file, which this script does not evaluate: $misplaced"

# The inputs: INPUT_NAME, else the default.
declare -A inputs=()
mapfile -t input_names < <(q '.inputs // {} | keys[]')
for name in "${input_names[@]}"; do
  var=INPUT_${name^^}
  var=${var//-/_}
  if [ -n "${!var+set}" ]; then
    inputs[$name]=${!var}
  else
    # shellcheck disable=SC2016 # a jq program
    inputs[$name]=$(q --arg n "$name" '.inputs[$n].default // "" | tostring')
  fi
done
mapfile -t input_vars < <(compgen -e | grep '^INPUT_' || true)
for var in "${input_vars[@]}"; do
  known=
  for name in "${input_names[@]}"; do
    v=INPUT_${name^^}
    [ "${v//-/_}" != "$var" ] || known=1
  done
  [ -n "$known" ] || die "$var names no input of $action_file (its inputs: ${input_names[*]})"
done

mapfile -t step_ids < <(q '.runs.steps[].id // empty')

# Sets `value` to what the expression EXPR (without ${{ }}) evaluates to.
value=
eval_value() {
  local expr=$1 id name
  expr=${expr#"${expr%%[![:space:]]*}"}
  expr=${expr%"${expr##*[![:space:]]}"}
  if [[ $expr =~ ^inputs\.([A-Za-z_][A-Za-z0-9_-]*)$ ]]; then
    name=${BASH_REMATCH[1]}
    [ -n "${inputs[$name]+set}" ] || die "$action_file uses inputs.$name, which it does not declare"
    value=${inputs[$name]}
  elif [[ $expr =~ ^steps\.([A-Za-z_][A-Za-z0-9_-]*)\.outputs\.([A-Za-z_][A-Za-z0-9_-]*)$ ]]; then
    id=${BASH_REMATCH[1]}
    name=${BASH_REMATCH[2]}
    [[ " ${step_ids[*]} " == *" $id "* ]] || die "$action_file uses steps.$id, but no step has id $id"
    value=${outputs[$id.$name]-}
  elif [ "$expr" = github.action_path ]; then
    value=$repo
  elif [ "$expr" = github.action_ref ] || [ "$expr" = github.action_repository ]; then
    value=
  elif [[ $expr =~ ^\'(([^\']|\'\')*)\'$ ]]; then
    value=${BASH_REMATCH[1]//\'\'/\'}
  else
    die "cannot evaluate '$expr' (from $action_file): this script evaluates only inputs.NAME, steps.ID.outputs.NAME, github.action_path, github.action_ref, github.action_repository and 'literals'"
  fi
}

# What opens an expression.
# shellcheck disable=SC2016 # literally
open='${{'

# Sets `value` to TEXT with each ${{ EXPR }} replaced by its value.
interpolate() {
  local rest=$1 out='' inner
  while [[ $rest == *"$open"* ]]; do
    out+=${rest%%"$open"*}
    rest=${rest#*"$open"}
    [[ $rest == *'}}'* ]] || die "unterminated \${{ in $action_file: $1"
    inner=${rest%%'}}'*}
    rest=${rest#*'}}'}
    eval_value "$inner"
    out+=$value
  done
  value=$out$rest
}

job_failed=0

# Whether the condition COND (an if: line) holds now.
condition() {
  local cond=$1 trimmed disjunct atom any all neg fn left right bare
  local -a disjuncts atoms
  trimmed=${cond#"${cond%%[![:space:]]*}"}
  trimmed=${trimmed%"${trimmed##*[![:space:]]}"}
  if [[ $trimmed == "$open"*'}}' ]]; then
    trimmed=${trimmed#"$open"}
    trimmed=${trimmed%'}}'}
  fi
  [[ $trimmed != *"$open"* ]] || die "if: $cond: one \${{ }} around the whole condition, or none"
  bare=$trimmed
  for fn in always success failure cancelled; do bare=${bare//"$fn()"/}; done
  [[ $bare != *[\(\)]* ]] || die "if: $cond: parentheses and functions other than always(), success(), failure(), cancelled() are not evaluated here"
  # As on GitHub: without a status function, success() must hold too.
  [[ $trimmed =~ (always|success|failure|cancelled)\(\) ]] || trimmed="success() && $trimmed"
  mapfile -t disjuncts <<<"${trimmed//||/$'\n'}"
  any=0
  for disjunct in "${disjuncts[@]}"; do
    mapfile -t atoms <<<"${disjunct//&&/$'\n'}"
    all=1
    for atom in "${atoms[@]}"; do
      atom=${atom#"${atom%%[![:space:]]*}"}
      atom=${atom%"${atom##*[![:space:]]}"}
      if [[ $atom =~ ^(!?)[[:space:]]*(always|success|failure|cancelled)\(\)$ ]]; then
        neg=${BASH_REMATCH[1]}
        case ${BASH_REMATCH[2]} in
          always) value=1 ;;
          success) value=$((1 - job_failed)) ;;
          failure) value=$job_failed ;;
          cancelled) value=0 ;;
        esac
        [ -z "$neg" ] || value=$((1 - value))
      elif [[ $atom == *'!='* ]] || [[ $atom == *'=='* ]]; then
        if [[ $atom == *'!='* ]]; then
          left=${atom%%'!='*} right=${atom#*'!='} neg=1
        else
          left=${atom%%'=='*} right=${atom#*'=='} neg=
        fi
        eval_value "$left"
        left=${value,,}
        eval_value "$right"
        right=${value,,}
        # GitHub compares strings ignoring case.
        if [ "$left" = "$right" ]; then value=1; else value=0; fi
        [ -z "$neg" ] || value=$((1 - value))
      elif [[ $atom == '!'* ]]; then
        die "if: $cond: '!' is evaluated here only before always(), success(), failure(), cancelled()"
      else
        eval_value "$atom"
        if [ -n "$value" ]; then value=1; else value=0; fi
      fi
      [ "$value" -eq 1 ] || all=0
    done
    [ "$all" -eq 0 ] || any=1
  done
  [ "$any" -eq 1 ]
}

declare -A outputs=()
declare -A job_env=()
job_path=()

# Reads a GITHUB_OUTPUT or GITHUB_ENV file as the runner does (NAME=VALUE lines and
# NAME<<DELIMITER blocks) into the associative array named TARGET, keys PREFIX+NAME.
# shellcheck disable=SC2034 # target is a name for the caller's array
read_commands() {
  local file=$1 prefix=$3 line name delim body eq hd
  local -n target=$2
  local -a lines
  mapfile -t lines <"$file"
  local i=0 n=${#lines[@]}
  while [ "$i" -lt "$n" ]; do
    line=${lines[$i]%$'\r'}
    i=$((i + 1))
    [ -n "$line" ] || continue
    eq=${line%%=*} hd=${line%%<<*}
    if [[ $line == *=* ]] && { [[ $line != *'<<'* ]] || [ ${#eq} -lt ${#hd} ]; }; then
      [ -n "$eq" ] || die "$file: '$line' has no name"
      target[$prefix$eq]=${line#*=}
    elif [[ $line == *'<<'* ]]; then
      name=$hd
      [ -n "$name" ] || die "$file: '$line' has no name"
      delim=${line#*<<}
      body=
      local first=1 closed=
      while [ "$i" -lt "$n" ]; do
        line=${lines[$i]%$'\r'}
        i=$((i + 1))
        if [ "$line" = "$delim" ]; then
          closed=1
          break
        fi
        if [ -n "$first" ]; then body=$line first=; else body+=$'\n'$line; fi
      done
      [ -n "$closed" ] || die "$file: $name<<$delim is never closed by a line $delim"
      target[$prefix$name]=$body
    else
      die "$file: '$line' is neither NAME=VALUE nor NAME<<DELIMITER"
    fi
  done
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/temp"
job_summary=$work/summary.md
: >"$job_summary"
first_failure=0

# Runs run: step I with its evaluated environment ENV (NAME=VALUE...); sets `status`.
run_step() {
  local i=$1 shell name dir var f
  shift
  shell=$(q ".runs.steps[$i].shell // empty")
  [ "$shell" = bash ] || die "step $((i + 1)): shell '${shell:-none}': composite run steps must name a shell, and only bash is run here"
  q ".runs.steps[$i].run" >"$work/step$i.sh"
  for f in output env path summary; do
    : >"$work/step$i.$f"
  done
  local -a unset_inputs=()
  for var in "${input_vars[@]}"; do unset_inputs+=(-u "$var"); done
  local -a job=()
  for name in "${!job_env[@]}"; do job+=("$name=${job_env[$name]}"); done
  local path=$PATH
  for dir in "${job_path[@]}"; do path=$dir:$path; done
  status=0
  (cd "$repo" && env "${unset_inputs[@]}" "${job[@]}" \
    PATH="$path" CI=true GITHUB_ACTIONS=true RUNNER_OS=Linux \
    GITHUB_SERVER_URL="${GITHUB_SERVER_URL:-https://github.com}" \
    GITHUB_WORKSPACE="$repo" GITHUB_ACTION_PATH="$repo" RUNNER_TEMP="$work/temp" \
    GITHUB_OUTPUT="$work/step$i.output" GITHUB_ENV="$work/step$i.env" \
    GITHUB_PATH="$work/step$i.path" GITHUB_STEP_SUMMARY="$work/step$i.summary" \
    "$@" bash --noprofile --norc -eo pipefail "$work/step$i.sh") || status=$?
  local id
  id=$(q ".runs.steps[$i].id // empty")
  [ -z "$id" ] || read_commands "$work/step$i.output" outputs "$id."
  read_commands "$work/step$i.env" job_env ""
  while IFS= read -r dir; do
    [ -z "$dir" ] || job_path+=("$dir")
  done <"$work/step$i.path"
  cat "$work/step$i.summary" >>"$job_summary"
}

# Emulates uses: step I (ACTION) with its evaluated `with:` in the associative array
# named ARGS; sets `status`.
emulate() {
  local i=$1 uses=$2 key allowed id
  local -n args=$3
  id=$(q ".runs.steps[$i].id // empty")
  case $uses in
    actions/cache/restore@v6) allowed="path key restore-keys enableCrossOsArchive fail-on-cache-miss lookup-only" ;;
    actions/cache/save@v6) allowed="path key enableCrossOsArchive upload-chunk-size" ;;
    actions/upload-artifact@v7) allowed="name path if-no-files-found retention-days compression-level overwrite include-hidden-files" ;;
    *) die "step $((i + 1)) uses $uses, which this script does not emulate (it emulates actions/cache/restore@v6, actions/cache/save@v6 and actions/upload-artifact@v7)" ;;
  esac
  for key in "${!args[@]}"; do
    [[ " $allowed " == *" $key "* ]] || die "step $((i + 1)): $uses has no input '$key' (its inputs: $allowed)"
  done
  status=0
  local -a paths=()
  [ -z "${args[path]-}" ] || mapfile -t paths < <(sed '/^[[:space:]]*$/d' <<<"${args[path]}")
  # Relative paths are the workspace's, as for the actions.
  for key in "${!paths[@]}"; do
    [[ ${paths[key]} == /* ]] || paths[key]=$repo/${paths[key]}
  done
  case $uses in
    actions/cache/*)
      if [ -z "${args[key]-}" ] || [ ${#paths[@]} -eq 0 ]; then
        echo "::error::$uses: key and path are required (key: '${args[key]-}', path: '${args[path]-}')"
        status=1
        return
      fi
      ;;
  esac
  local p
  case $uses in
    actions/cache/restore@*)
      echo "$uses would restore key ${args[key]}${args[restore-keys]:+, else the newest entry whose key starts with ${args[restore-keys]}}, into:"
      for p in "${paths[@]}"; do
        if [ -e "$p" ]; then echo "  $p (here: the machine's own, $(du -sh "$p" 2>/dev/null | cut -f1))"; else echo "  $p (here: missing)"; fi
      done
      if [ -n "$id" ]; then
        outputs[$id.cache-hit]=
        outputs[$id.cache-primary-key]=${args[key]}
        outputs[$id.cache-matched-key]=
      fi
      ;;
    actions/cache/save@*)
      echo "$uses would save under key ${args[key]}:"
      local found=0
      for p in "${paths[@]}"; do
        if [ -e "$p" ]; then
          echo "  $p ($(du -sh "$p" 2>/dev/null | cut -f1))"
          found=1
        else
          echo "  $p (missing)"
        fi
      done
      # actions/cache only warns when no path exists, and saves nothing.
      [ "$found" -eq 1 ] || echo "::warning::$uses: none of the paths exist: nothing would be saved"
      ;;
    actions/upload-artifact@*)
      if [ -z "${args[name]-}" ] || [ ${#paths[@]} -eq 0 ]; then
        echo "::error::$uses: name and path are required"
        status=1
        return
      fi
      local count=0
      for p in "${paths[@]}"; do
        if [ -d "$p" ]; then
          count=$((count + $(find "$p" -type f | wc -l)))
        elif [ -f "$p" ]; then
          count=$((count + 1))
        fi
      done
      if [ "$count" -eq 0 ]; then
        echo "::error::$uses: no files in ${paths[*]} (the folder is missing or empty): artifact ${args[name]} would not be uploaded"
        status=1
        return
      fi
      echo "$uses would upload artifact ${args[name]}${args[overwrite]:+ (overwrite: ${args[overwrite]})}: $count files from ${paths[*]}:"
      for p in "${paths[@]}"; do
        find "$p" -type f -printf '  %p (%s bytes)\n'
      done
      ;;
  esac
}

# Every step's keys, and every expression evaluated once before the first step runs,
# so that one this script cannot evaluate fails now, not only when its step is
# reached.
allowed_keys=" name id if shell run env uses with "
steps=$(q '.runs.steps | length')
for ((i = 0; i < steps; i++)); do
  mapfile -t keys < <(q ".runs.steps[$i] | keys[]")
  for key in "${keys[@]}"; do
    [[ $allowed_keys == *" $key "* ]] || die "step $((i + 1)) has '$key', which this script does not emulate"
  done
  while IFS= read -r -d '' raw; do
    interpolate "$raw"
  done < <(jq -j ".runs.steps[$i] | (.env // {}), (.with // {}) | .[] | tostring, \"\u0000\"" <<<"$action")
  cond=$(q ".runs.steps[$i].if // empty | tostring")
  [ -z "$cond" ] || condition "$cond" || true
done

for ((i = 0; i < steps; i++)); do
  name=$(q ".runs.steps[$i].name // .runs.steps[$i].uses // \"step $((i + 1))\"")
  cond=$(q ".runs.steps[$i].if // empty | tostring")
  if ! condition "${cond:-success()}"; then
    echo "==> $name: skipped (if: ${cond:-success()})"
    continue
  fi
  echo "==> $name"
  uses=$(q ".runs.steps[$i].uses // empty")
  if [ -n "$uses" ]; then
    declare -A with=()
    while IFS= read -r -d '' key && IFS= read -r -d '' raw; do
      interpolate "$raw"
      # shellcheck disable=SC2034 # read by emulate through its name
      with[$key]=$value
    done < <(jq -j ".runs.steps[$i].with // {} | to_entries[] | .key, \"\u0000\", (.value | tostring), \"\u0000\"" <<<"$action")
    emulate "$i" "$uses" with
    unset with
  else
    step_env=()
    while IFS= read -r -d '' key && IFS= read -r -d '' raw; do
      interpolate "$raw"
      step_env+=("$key=$value")
    done < <(jq -j ".runs.steps[$i].env // {} | to_entries[] | .key, \"\u0000\", (.value | tostring), \"\u0000\"" <<<"$action")
    run_step "$i" "${step_env[@]}"
  fi
  if [ "$status" -ne 0 ]; then
    echo "==> $name: failed (exit $status)"
    job_failed=1
    [ "$first_failure" -ne 0 ] || first_failure=$status
  fi
done

[ -z "$summary_out" ] || cp "$job_summary" "$summary_out"
echo "==> job summary${summary_out:+ ($summary_out)}:"
cat "$job_summary"
if [ "$job_failed" -ne 0 ]; then
  echo "ci/action-local.sh: the job failed (first failing step's status: $first_failure)"
  exit "$first_failure"
fi
echo "ci/action-local.sh: every step succeeded"
