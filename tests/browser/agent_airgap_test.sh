#!/usr/bin/env bash
# Browser test of air-gapped updates on the appliance updates page (docs/agent/web.md "Air-gapped
# updates on the page", docs/airgap.md): the server stack on loopback (tools/lib/stack.sh) with the
# agent tests' releases published, one appliance enrolled while connected (base 1.0.0 + software
# 7.0.0) and then cut off from the updater as tests/airgap/airgap_test.sh does (updater_url points
# nowhere), auto_install off, its daemon serving the page (the `web` section, a self-signed
# certificate). Chromium (agent_airgap.test.mjs) makes a download key on the page, takes it to the
# updater's public portal, downloads the bundle, uploads it on the page, watches the import job
# install it and downloads the installation report. The script then checks the appliance's state
# with the CLI. Screenshot: BUILD_DIR/browser/agent_airgap.png.
#
# Usage: agent_airgap_test.sh BIN_DIR SOURCE_DIR BUILD_DIR    Exit 0 pass, 1 fail, 77 skip (only
# when tests/browser/node_modules or /usr/bin/chromium is missing: tools/test installs both).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/agent_web.sh"
agent_web_begin browser-agent-airgap "upk updater keyserver appliance-agent" "$@"

agent_stack_up

step "an appliance enrolled while connected (base 1.0.0 + software 7.0.0), then cut off; auto_install off"
a=$work/appliance
agent_appliance "$a"
agent "$a" settings auto_install false >settings.out 2>&1 || fail "settings auto_install false: $(cat settings.out)"
jq '.updater_url = "http://127.0.0.1:9"' "$a/agent.json" >"$a/agent.json.new" && mv "$a/agent.json.new" "$a/agent.json"
agent "$a" check >nocheck.out 2>&1 && fail "the cut-off appliance reached the updater: $(cat nocheck.out)"

step "the agent daemon, with the updates page"
agent_web_up "$a" offline
echo "the page: $origin; the portal: $STACK_UP_URL/portal"

step "chromium: download key, portal, bundle upload, import job, report"
mkdir -p downloads
UPKEEP_SETUP_TOKEN_FILE=$work/setup.token UPKEEP_PORTAL_URL=$STACK_UP_URL/portal UPKEEP_DOWNLOAD_DIR=$work/downloads \
  UPKEEP_EXPECT_UPDATES="base 2.0.0,software 7.1.0,software 8.0.0" \
  UPKEEP_EXPECT_INSTALLED="base 2.0.0,software 8.0.0" \
  BROWSER_TEST_SECONDS=240 \
  browser_run "$here/agent_airgap.test.mjs" "$origin" "$build" ||
  fail "the browser test failed (screenshot: $build/browser/agent_airgap.png)"

step "the appliance's state after the page's import"
agent "$a" --json status >status.json 2>status.err || fail "status: $(cat status.err)"
got=$(jq -r '.installed | to_entries | map("\(.key)=\(.value.version)") | sort | join(" ")' status.json)
[[ "$got" == "base=2.0.0 software=8.0.0" ]] || fail "installed after the import: $got"
report=$(ls downloads/*.json 2>/dev/null | head -n 1)
[[ -n "$report" ]] || fail "the report download left no file"
grep -q "$appliance_id" "$report" || fail "the downloaded report does not name the appliance"
[[ -z "$(ls -A "$a/state/uploads")" ]] || fail "the uploaded bundle was left in $a/state/uploads: $(ls "$a/state/uploads")"
grep -q "web: 'admin' uploaded a bundle" agent.log agent.err || fail "the daemon did not log the upload"
if grep -q "UPK1-" agent.log agent.err; then fail "the daemon logged the download key"; fi
echo "PASS: air-gapped updates on the appliance updates page in Chromium"
