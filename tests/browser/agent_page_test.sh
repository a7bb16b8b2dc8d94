#!/usr/bin/env bash
# Browser test of the appliance updates page (docs/agent/web.md, docs/browser-tests.md): the
# server stack on loopback (tools/lib/stack.sh) with the agent tests' releases published, one
# enrolled appliance on base 1.0.0 + software 7.0.0 whose agent.json has a `web` section (a
# self-signed certificate, 127.0.0.1 on a port the kernel picks, read from the daemon's log),
# auto_install off, and the daemon `appliance-agent run`. Chromium (agent_page.test.mjs) does the
# first-start setup (bad input first), signs in, checks for updates, compares the page's plan with
# `appliance-agent --json check`, signs out and tries a wrong password.
# Screenshot: BUILD_DIR/browser/agent_page.png (the updates page after the check).
#
# Usage: agent_page_test.sh BIN_DIR SOURCE_DIR BUILD_DIR    Exit 0 pass, 1 fail, 77 skip (only
# when tests/browser/node_modules or /usr/bin/chromium is missing: tools/test installs both).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/agent_web.sh"
agent_web_begin browser-agent-page "upk updater keyserver appliance-agent" "$@"

agent_stack_up

step "an enrolled appliance on base 1.0.0 + software 7.0.0, auto_install off"
a=$work/appliance
agent_appliance "$a"
agent "$a" settings auto_install false >settings.out 2>&1 || fail "settings auto_install false: $(cat settings.out)"
agent "$a" --json check >check.json 2>check.err || fail "agent check: $(cat check.err)"
jq -e '.plan | length > 0' check.json >/dev/null || fail "agent check shows no plan: $(cat check.json)"
echo "plan: $(jq -r '[.plan[] | "\(.name) \(.version) (\(.state))"] | join(", ")' check.json)"

step "the agent daemon, with the updates page (web section, self-signed certificate)"
agent_web_up "$a"
echo "the page: $origin"

step "chromium: the updates page"
UPKEEP_SETUP_TOKEN_FILE=$work/setup.token UPKEEP_EXPECT_PLAN_FILE=$work/check.json \
  browser_run "$here/agent_page.test.mjs" "$origin" "$build" ||
  fail "the browser test failed (screenshot: $build/browser/agent_page.png)"
grep -q "web: the administrator 'admin' was created" agent.log agent.err || fail "the daemon did not log the setup"
grep -q "web: 'admin' asked for an update check" agent.log agent.err || fail "the daemon did not log the check request"
echo "PASS: the appliance updates page in Chromium"
