#!/usr/bin/env bash
# End-to-end test of online updates, as real processes on loopback: a private PostgreSQL, the
# keyserver and the updater (tools/lib/stack.sh), the operator's `upk`, and the appliance agent.
# An appliance provisioned with base 1.0.0 + software 7.0.0 walks, with the agent daemon,
# base 1.0.0 -> 2.0.0 and software 7.0.0 -> 7.1.0 -> 8.0.0 (8.0.0 needs base 2.0.0 and software
# 7.1.0). 8.0.0's health check fails the first time: the agent rolls it back by itself and
# reports it; the admin retries and it installs. Reports reach the updater; SIGTERM stops the
# daemon with exit 0.
#
# Usage: e2e_test.sh BIN_DIR SOURCE_DIR     Exit 0 pass, 1 fail.
set -euo pipefail

bin=$(cd "${1:?usage: e2e_test.sh BIN_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: e2e_test.sh BIN_DIR SOURCE_DIR}" && pwd)
source "$src/tests/lib/e2e.sh"
e2e_begin agent-e2e upk updater keyserver fleet-sim appliance-agent
agent_pid=
e2e_on_exit() { [[ -z "$agent_pid" ]] || kill "$agent_pid" 2>/dev/null; }
e2e_on_fail() {
  [[ -f "$work/agent.log" ]] && { echo "-- agent log (last lines):"; tail -n 30 "$work/agent.log"; }
  [[ -f "$work/agent.err" ]] && { echo "-- agent errors (last lines):"; tail -n 30 "$work/agent.err"; }
}
source "$src/tests/appliance-agent/lib.sh"

agent_stack_up

step "appliance: provisioned (identity, trust anchors, factory versions base 1.0.0 + software 7.0.0), enrolled"
a=$work/appliance
agent_appliance "$a"
id=$appliance_id
agent "$a" provision base-2.0.0.upk >prov2.out 2>&1 && fail "provisioning a second base version succeeded"
agent "$a" check >check.out 2>&1 || fail "agent check: $(cat check.out)"
cat check.out
grep -q "base 2.0.0" check.out || fail "the plan does not name base 2.0.0"
grep -q "software 8.0.0" check.out || fail "the plan does not name software 8.0.0"
agent "$a" settings poll_interval_seconds 60 >/dev/null || fail "settings"

step "a full disk: the install is refused with how much space is missing, and nothing changes"
mkdir -p "$a/state/downloads"
if mount -t tmpfs -o size=64k upkeep-full "$a/state/downloads" 2>/dev/null; then
  code=0
  agent "$a" install --force >full.out 2>&1 || code=$?
  umount "$a/state/downloads"
  [[ $code -ne 0 ]] || fail "an install went ahead on a full disk: $(cat full.out)"
  grep -q "not enough space on .* MiB missing" full.out || fail "the refusal does not say how much is missing: $(cat full.out)"
  agent "$a" status --json >status0.json
  [[ "$(jq -r .installed.base.version status0.json)" == 1.0.0 && "$(jq -r .operation status0.json)" == null ]] ||
    fail "a refused install changed the appliance: $(jq -c '{installed, operation}' status0.json)"
  echo "refused: $(tail -n 1 full.out)"
else
  echo "SKIP (this step only): mounting a small tmpfs is not permitted here"
fi

step "the agent daemon walks the path; 8.0.0's health check fails once and is rolled back"
touch "$a"/fail-once-software-8.0.0
"$bin/appliance-agent" --config "$a/agent.json" run >agent.log 2>agent.err &
agent_pid=$!
done_=0
for _ in $(seq 1 300); do
  if agent "$a" history -n 200 2>/dev/null | grep -q "rollback.*software 8.0.0"; then done_=1; break; fi
  kill -0 "$agent_pid" 2>/dev/null || fail "the agent daemon died"
  sleep 0.2
done
((done_)) || fail "no rollback of software 8.0.0 within 60 s"
agent "$a" status --json >status1.json || fail "status"
[[ "$(jq -r .installed.base.version status1.json)" == 2.0.0 ]] || fail "base is not 2.0.0: $(jq -c .installed status1.json)"
[[ "$(jq -r .installed.software.version status1.json)" == 7.1.0 ]] ||
  fail "software is not back on 7.1.0: $(jq -c .installed status1.json)"
[[ "$(readlink "$a"/system/packages/software/current)" == slots/7.1.0 ]] ||
  fail "software's current link is $(readlink "$a"/system/packages/software/current), not slots/7.1.0"
agent "$a" history -n 200 >history1.txt
grep -q "success.*base 2.0.0" history1.txt || fail "no success of base 2.0.0 in the journal"
grep -q "success.*software 7.1.0" history1.txt || fail "no success of software 7.1.0 in the journal"
ls "$a"/state/backups/*.upkbak >/dev/null 2>&1 || fail "no backup was made before the installs"

step "the failure and the rollback reached the updater"
ok=0
for _ in $(seq 1 50); do
  curl -sf -H "Authorization: Bearer $UPKEEP_TOKEN" "$STACK_UP_URL/api/v1/appliances/$id" >appliance.json
  if jq -e '[.appliance.events[] | select(.name == "software" and .version == "8.0.0") | .type] |
            (index("failure") != null) and (index("rollback") != null)' appliance.json >/dev/null; then ok=1; break; fi
  sleep 0.2
done
((ok)) || fail "the updater has no failure+rollback of software 8.0.0: $(jq -c '.appliance.events' appliance.json)"
jq -e '[.appliance.events[] | select(.type == "failure" and .version == "8.0.0") | .log_tail] | any(test("did not come up"))' \
  appliance.json >/dev/null || fail "the failure report lacks the health check's log tail"

step "SIGTERM stops the daemon with exit 0"
kill -TERM "$agent_pid"
code=0
wait "$agent_pid" || code=$?
agent_pid=
[[ $code -eq 0 ]] || fail "the agent exited with $code after SIGTERM"

step "the admin retries: 8.0.0 installs"
agent "$a" install --retry --all >install.out 2>&1 || fail "install --retry: $(cat install.out)"
agent "$a" status --json >status2.json || fail "status"
[[ "$(jq -r .installed.software.version status2.json)" == 8.0.0 ]] || fail "software is not 8.0.0: $(cat install.out)"
[[ "$(cat "$a"/system/packages/software/current/VERSION)" == 8.0.0 ]] || fail "8.0.0 is not the active slot"
agent "$a" check >check2.out 2>&1 || fail "check after the walk: $(cat check2.out)"
grep -q "up to date" check2.out || fail "not up to date at the end: $(cat check2.out)"
curl -sf -H "Authorization: Bearer $UPKEEP_TOKEN" "$STACK_UP_URL/api/v1/appliances/$id" >appliance2.json
jq -e '.appliance.installed.software == "8.0.0" and .appliance.installed.base == "2.0.0"' appliance2.json >/dev/null ||
  fail "the updater does not see the new versions: $(jq -c .appliance.installed appliance2.json)"
echo "PASS"
