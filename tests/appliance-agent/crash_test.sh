#!/usr/bin/env bash
# Crash safety with real processes: for every fault-injection point of an install
# (`appliance-agent crash-points`: download, backup, stage, switch, health check, commit,
# rollback), a fresh appliance starts installing base 2.0.0 and the agent SIGKILLs itself at that
# point (UPKEEP_AGENT_CRASH_AT). Started again, it must end on the old or the new version, fully
# working (the active slot is the recorded version and its health check passes), with nothing in
# progress and the journal saying what happened; then the install completes.
# (Power loss, dropping unsynced writes, is simulated in-process by FaultFs: agent_core_test.)
#
# Usage: crash_test.sh BIN_DIR SOURCE_DIR     Exit 0 pass, 1 fail.
set -euo pipefail

bin=$(cd "${1:?usage: crash_test.sh BIN_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: crash_test.sh BIN_DIR SOURCE_DIR}" && pwd)
source "$src/tests/lib/e2e.sh"
e2e_begin agent-crash upk updater keyserver fleet-sim appliance-agent
current_dir=
e2e_on_fail() { [[ -n "$current_dir" && -f "$current_dir/config.ok" ]] && agent "$current_dir" history -n 40; }
source "$src/tests/appliance-agent/lib.sh"
agent_stack_up

# The state must be one of the two versions, working, with nothing half-done.
check_consistent() {
  local d=$1 point=$2
  agent "$d" status --json >"$d/status.json" || fail "$point: status after restart"
  local version op
  version=$(jq -r .installed.base.version "$d/status.json")
  op=$(jq -c .operation "$d/status.json")
  [[ "$version" == 1.0.0 || "$version" == 2.0.0 ]] || fail "$point: base is '$version', neither old nor new"
  [[ "$op" == null ]] || fail "$point: an operation is still in progress after recovery: $op"
  [[ "$(readlink "$d/system/packages/base/current")" == "slots/$version" ]] ||
    fail "$point: active slot $(readlink "$d/system/packages/base/current") but base $version recorded"
  (cd "$d/system/packages/base/current" && UPKEEP_ROOT="$d/system" UPKEEP_PACKAGE=base UPKEEP_VERSION=$version \
    ./bin/health >/dev/null) || fail "$point: base $version does not pass its health check after recovery"
  [[ -d "$d/system/packages/base/slots/$version" ]] || fail "$point: slot of $version missing"
  echo "$version"
}

points=$("$bin/appliance-agent" crash-points)
[[ $(wc -w <<<"$points") -ge 8 ]] || fail "too few crash points: $points"
for point in $points; do
  step "crash at $point"
  d=$work/crash-$point
  current_dir=$d
  agent_appliance "$d"
  touch "$d/config.ok"
  agent "$d" check >"$d/check.out" 2>&1 || fail "$point: check: $(cat "$d/check.out")"
  [[ "$point" == after-rollback ]] && touch "$d/fail-once-base-2.0.0"
  code=0
  UPKEEP_AGENT_CRASH_AT=$point agent "$d" install --force >"$d/crash.out" 2>&1 || code=$?
  [[ $code -eq 137 ]] || fail "$point: expected the agent to die by SIGKILL (137), got $code: $(cat "$d/crash.out")"
  # Restart: any command that opens the store for writing recovers first.
  agent "$d" check >"$d/recover.out" 2>&1 || fail "$point: check after the crash: $(cat "$d/recover.out")"
  after=$(check_consistent "$d" "$point")
  agent "$d" history -n 100 >"$d/history.txt"
  case "$point" in
    after-commit) [[ "$after" == 2.0.0 ]] || fail "$point: a crash after the commit must end on the new version" ;;
    mid-download|after-download|after-backup|mid-stage|after-stage)
      [[ "$after" == 1.0.0 ]] || fail "$point: nothing was switched yet, so base must still be 1.0.0" ;;
  esac
  if [[ "$point" != after-commit ]]; then
    grep -Eq "recovered|rollback" "$d/history.txt" || fail "$point: the journal does not explain the crash"
  fi
  # And the install completes afterwards.
  agent "$d" install --force --retry >"$d/install.out" 2>&1 || fail "$point: install after recovery: $(cat "$d/install.out")"
  final=$(check_consistent "$d" "$point")
  [[ "$final" == 2.0.0 ]] || fail "$point: base $final after the retried install: $(cat "$d/install.out")"
  echo "ok: $point -> $after after the restart, then 2.0.0"
done
echo "PASS"
