# The common frame of the end-to-end test scripts that run the server stack (sourced after $bin
# and $src are set): a work directory, the stack (tools/lib/stack.sh) under it, clean-up on exit,
# fail() and step().
#
#   e2e_begin NAME TOOL...   checks BIN/TOOL exists for each, makes $work (under $TMPDIR or /tmp;
#                            E2E_TMP overrides), stack_init $work/stack, cd $work
#   fail MESSAGE             prints it, the scripts' own e2e_on_fail (if defined), the tails of
#                            the updater and keyserver logs, exits 1
#   step TEXT                a heading
# On exit e2e_on_exit (if defined) runs, then the stack is destroyed and $work removed; with
# KEEP_WORK=1 the stack is only stopped and $work kept for a look.

e2e_begin() {
  local name=$1 tool
  shift
  for tool in "$@"; do
    [[ -x "$bin/$tool" ]] || { echo "FAIL: $bin/$tool not found; build it first"; exit 1; }
  done
  work=$(mktemp -d "${E2E_TMP:-${TMPDIR:-/tmp}}/upkeep-$name.XXXXXX")
  source "$src/tools/lib/stack.sh"
  stack_init "$work/stack" "$bin"
  trap e2e_cleanup EXIT
  cd "$work"
}

e2e_cleanup() {
  if declare -F e2e_on_exit >/dev/null; then e2e_on_exit || true; fi
  if [[ -n "${KEEP_WORK:-}" ]]; then
    stack_stop
    echo "work kept: $work"
  else
    stack_destroy
    rm -rf "$work"
  fi
}

fail() {
  echo "FAIL: $*"
  if declare -F e2e_on_fail >/dev/null; then e2e_on_fail || true; fi
  local log
  for log in updater keyserver; do
    [[ -f "$work/stack/$log.log" ]] && { echo "-- $log log (last lines):"; tail -n 15 "$work/stack/$log.log"; }
  done
  exit 1
}

step() { echo "== $*"; }
