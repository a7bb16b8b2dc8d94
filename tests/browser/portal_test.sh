#!/usr/bin/env bash
# Browser test of the updater's public download portal (docs/browser-tests.md): the server stack
# on loopback (tools/lib/stack.sh: PostgreSQL, keyserver, updater) with the agent tests' releases
# published and one enrolled simulated appliance, whose download key is pasted into the page by
# Chromium (tests/browser/portal.test.mjs). Screenshot: BUILD_DIR/browser/portal.png.
#
# Usage: portal_test.sh BIN_DIR SOURCE_DIR BUILD_DIR    Exit 0 pass, 1 fail, 77 skip (only when
# tests/browser/node_modules or /usr/bin/chromium is missing: tools/test installs both).
set -euo pipefail

bin=$(cd "${1:?usage: portal_test.sh BIN_DIR SOURCE_DIR BUILD_DIR}" && pwd)
src=$(cd "${2:?usage: portal_test.sh BIN_DIR SOURCE_DIR BUILD_DIR}" && pwd)
build=$(mkdir -p "${3:?usage: portal_test.sh BIN_DIR SOURCE_DIR BUILD_DIR}" && cd "$3" && pwd)
here=$src/tests/browser
source "$here/lib/run.sh"
browser_preflight

source "$src/tests/lib/e2e.sh"
e2e_begin browser-portal upk updater keyserver appliance-agent
source "$src/tests/appliance-agent/lib.sh"
e2e_on_exit() { browser_stop; }

agent_stack_up

step "an enrolled appliance on base 1.0.0 + software 7.0.0, and its download key"
agent_appliance "$work/appliance"
umask 077
agent "$work/appliance" --json download-key --valid-hours 24 >key.json 2>key.err || fail "download-key: $(cat key.err)"
jq -r .download_key key.json >download.key
umask 022
[[ "$(head -c 5 download.key)" == UPK1- ]] || fail "download-key printed no key"

step "chromium: the portal page"
UPKEEP_DOWNLOAD_KEY_FILE=$work/download.key \
  UPKEEP_EXPECT_UPDATES="base 2.0.0,software 7.1.0,software 8.0.0" \
  browser_run "$here/portal.test.mjs" "$STACK_UP_URL" "$build" || fail "the browser test failed (screenshot: $build/browser/portal.png)"
echo "PASS: the portal page in Chromium"
