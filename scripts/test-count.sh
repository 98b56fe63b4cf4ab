# shellcheck shell=bash
# Sourced by scripts/test.sh and scripts/engine-matrix.sh, never run: each filtered part of the
# suite (a `cargo test` with --skip, --exact or a module filter) says how many tests it ran, and a
# part that ran none fails. A filter that matches nothing passes in libtest, so without this a
# test renamed or moved out of `cluster::` would silently stop running; with it CI prints the
# number of tests it runs, part by part and in total, to compare before and after a change.
#
# TEST_COUNT_LIST=1 (scripts/test.sh --count) lists instead of running: each part's `cargo test`
# gets libtest's --list, and the counts are those the run would have.
#
# The tally is a file, "count<TAB>seconds<TAB>part" a line, named by TEST_TALLY: the outermost script creates
# it (tally_begin) and prints it (tally_print); the scripts it runs append to the same file.

tally_begin() {
  if [[ -z "${TEST_TALLY:-}" ]]; then
    TEST_TALLY=$(mktemp "${TMPDIR:-/tmp}/test-tally.XXXXXX")
    export TEST_TALLY
    TALLY_OWNER=1
  fi
}

# counted_tests PART CARGO_TEST_ARGS...: runs `cargo test CARGO_TEST_ARGS...` (which must hold
# the `--` that starts libtest's arguments), its output shown as it comes; then prints how many
# tests it ran, per test binary, and in how long (the build included), and fails when that is
# none.
counted_tests() {
  local part=$1
  shift
  local -a args=("$@")
  local verb=ran
  if [[ "${TEST_COUNT_LIST:-0}" == 1 ]]; then
    args+=(--list)
    verb="would run"
  fi
  local started=$SECONDS out
  out=$(mktemp "${TMPDIR:-/tmp}/test-part.XXXXXX")
  cargo test "${args[@]}" 2>&1 | tee "$out"
  # Each test binary's count follows its "Running <target>" or "Doc-tests <crate>" line: a run
  # ends with "test result: ok. N passed; F failed; ...", a --list with "N tests, M benchmarks".
  local counts
  counts=$(awk '
    /^ *Running / { target = $2 == "unittests" ? $3 : $2; next }
    /^ *Doc-tests / { target = "doc-tests"; next }
    /^test result: / { n = $4 + $6; total += n; parts = parts sep target " " n; sep = ", "; next }
    /^[0-9]+ tests?, [0-9]+ benchmarks?$/ { total += $1; parts = parts sep target " " $1; sep = ", " }
    END { printf "%d\t%s\n", total, parts }
  ' "$out")
  rm -f "$out"
  local total=${counts%%$'\t'*}
  local detail=${counts#*$'\t'}
  local seconds=$((SECONDS - started))
  printf 'tests: %s %s %d (%s) in %d s\n' "$part" "$verb" "$total" "$detail" "$seconds"
  if ((total == 0)); then
    printf 'error: %s: its filter matches no test (a test renamed or moved?)\n' \
      "$part" >&2
    return 1
  fi
  printf '%d\t%d\t%s\n' "$total" "$seconds" "$part" >>"$TEST_TALLY"
}

# Prints every part's count, its seconds and their sums, if this script created the tally.
tally_print() {
  [[ -n "${TALLY_OWNER:-}" ]] || return 0
  printf '\n==> tests per part (tests, seconds, part)\n'
  awk -F '\t' '
    { printf "%6d %6d s  %s\n", $1, $2, $3; tests += $1; seconds += $2 }
    END { printf "%6d %6d s  in all\n", tests, seconds }
  ' "$TEST_TALLY"
  rm -f "$TEST_TALLY"
}
