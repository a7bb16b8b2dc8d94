#!/usr/bin/env bash
# Browser test of "Install this update" on the appliance updates page (docs/agent/web.md): the
# server stack with the agent tests' releases (tests/appliance-agent/lib.sh), one enrolled
# appliance on base 1.0.0 + software 7.0.0 with auto_install off and its daemon serving the page.
# Chromium (agent_install.test.mjs) runs twice:
#   1. setup, sign-in, "Install now" on the plan's last step (software 8.0.0: base 2.0.0 and
#      software 7.1.0 are installed first), the job's live progress to the end, the new versions;
#   2. this script publishes software 8.1.0 whose health check fails (the fail-once marker of
#      lib.sh's packages), then Chromium checks for updates, installs it, and sees the job fail
#      with the rollback to 8.0.0 in its result, the rollback in the history, 8.0.0 still installed.
# Screenshots: BUILD_DIR/browser/agent_install.png and agent_rollback.png.
#
# Usage: agent_install_test.sh BIN_DIR SOURCE_DIR BUILD_DIR    Exit 0 pass, 1 fail, 77 skip (only
# when tests/browser/node_modules or /usr/bin/chromium is missing).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/agent_web.sh"
agent_web_begin browser-agent-install "upk updater keyserver appliance-agent" "$@"

agent_stack_up

step "an enrolled appliance on base 1.0.0 + software 7.0.0, auto_install off"
a=$work/appliance
agent_appliance "$a"
agent "$a" settings auto_install false >settings.out 2>&1 || fail "settings auto_install false: $(cat settings.out)"
agent "$a" --json check >check.json 2>check.err || fail "agent check: $(cat check.json) $(cat check.err)"
echo "plan: $(jq -r '[.plan[] | "\(.name) \(.version) (\(.state))"] | join(", ")' check.json)"

step "the agent daemon, with the updates page"
agent_web_up "$a"
echo "the page: $origin"

step "chromium: \"Install now\" on the last step, progress to the end"
UPKEEP_PART=install UPKEEP_SETUP_TOKEN_FILE=$work/setup.token \
  UPKEEP_EXPECT_INSTALLED="base 2.0.0,software 8.0.0" \
  browser_run "$here/agent_install.test.mjs" "$origin" "$build" ||
  fail "the install run failed (screenshot: $build/browser/agent_install.png)"
agent "$a" status --json >status1.json 2>/dev/null || fail "agent status"
[[ "$(jq -r .installed.software.version status1.json)" == 8.0.0 ]] ||
  fail "software is not 8.0.0 after the job: $(jq -c .installed status1.json)"
grep -q "web: 'admin' asked to install software 8.0.0 now" agent.log agent.err || fail "the daemon did not log the request"

step "operator: software 8.1.0 published; its health check fails (the appliance rolls it back)"
UPKEEP_TOKEN=$(cat "$work/stack/tokens/publisher")
pack software 8.1.0 software 8.0.0 'base>=2.0.0'
touch "$a/fail-once-software-8.1.0"
"$upk" publish software-8.1.0.upk --targets-key targets.key >publish-8.1.0.out 2>&1 ||
  fail "publish software 8.1.0: $(cat publish-8.1.0.out)"

step "chromium: check, \"Install now\" on software 8.1.0, the failed job and the rollback"
UPKEEP_PART=rollback UPKEEP_FAIL_STEP="software 8.1.0" \
  browser_run "$here/agent_install.test.mjs" "$origin" "$build" ||
  fail "the rollback run failed (screenshot: $build/browser/agent_rollback.png)"
agent "$a" status --json >status2.json 2>/dev/null || fail "agent status"
[[ "$(jq -r .installed.software.version status2.json)" == 8.0.0 ]] ||
  fail "software is not back on 8.0.0: $(jq -c .installed status2.json)"
[[ "$(readlink "$a"/system/packages/software/current)" == *8.0.0 ]] ||
  fail "software's current link is $(readlink "$a"/system/packages/software/current)"
echo "PASS: \"Install this update\" with live progress, and the rollback, in Chromium"
