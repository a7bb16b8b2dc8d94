#!/usr/bin/env bash
# Browser test of the updater's support dashboard (docs/dashboard.md): the server stack on
# loopback (tools/lib/stack.sh: PostgreSQL, keyserver, updater) with the agent tests' releases
# published, one enrolled simulated appliance that checked in, a rollout of software 8.0.0 and a
# portal bundle downloaded for the appliance (so a download is withheld). Chromium then does the
# first-start setup with the token from the updater's log, finds the appliance, reads its upgrade
# path, pauses the rollout on the fleet page and re-enables the download
# (tests/browser/dashboard.test.mjs). Screenshot: BUILD_DIR/browser/dashboard.png.
#
# Usage: dashboard_test.sh BIN_DIR SOURCE_DIR BUILD_DIR    Exit 0 pass, 1 fail, 77 skip (only when
# tests/browser/node_modules or /usr/bin/chromium is missing: tools/test installs both).
set -euo pipefail

bin=$(cd "${1:?usage: dashboard_test.sh BIN_DIR SOURCE_DIR BUILD_DIR}" && pwd)
src=$(cd "${2:?usage: dashboard_test.sh BIN_DIR SOURCE_DIR BUILD_DIR}" && pwd)
build=$(mkdir -p "${3:?usage: dashboard_test.sh BIN_DIR SOURCE_DIR BUILD_DIR}" && cd "$3" && pwd)
here=$src/tests/browser
source "$here/lib/run.sh"
browser_preflight

source "$src/tests/lib/e2e.sh"
e2e_begin browser-dashboard upk updater keyserver appliance-agent
source "$src/tests/appliance-agent/lib.sh"
e2e_on_exit() { browser_stop; }

agent_stack_up

step "an enrolled appliance on base 1.0.0 + software 7.0.0 that checked in"
agent_appliance "$work/appliance"

step "a rollout of software 8.0.0 on stable, one wave of 100 %"
"$upk" rollout create software 8.0.0 --channel stable --wave 100 --success-threshold 100 --error-threshold 50 >rollout.out 2>&1 || fail "upk rollout create: $(cat rollout.out)"

step "a portal bundle for the appliance: its packages are withheld until support re-enables them"
umask 077
agent "$work/appliance" --json download-key --valid-hours 24 >key.json 2>key.err || fail "download-key: $(cat key.err)"
umask 022
jq '{download_key: .download_key}' key.json >bundle-request.json
curl -sS -o bundle.json -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @bundle-request.json \
  "$STACK_UP_URL/api/v1/portal/bundles" >bundle.status || fail "bundle request failed"
[[ "$(cat bundle.status)" == 201 ]] || fail "bundle: status $(cat bundle.status): $(cat bundle.json)"

step "the one-time setup token from the updater's log"
token=""
for _ in $(seq 1 150); do
  token=$(sed -n 's/.*dashboard: first start: open .* with the one-time setup token \([0-9a-f]\{32\}\) (valid 24 h).*/\1/p' \
    "$STACK_DIR/updater.log" | tail -n 1)
  [[ -n "$token" ]] && break
  sleep 0.2
done
[[ -n "$token" ]] || fail "the updater logged no setup token: $(tail -n 20 "$STACK_DIR/updater.log")"
umask 077
printf '%s' "$token" >setup.token
umask 022

step "chromium: the dashboard"
UPKEEP_SETUP_TOKEN_FILE=$work/setup.token UPKEEP_APPLIANCE_ID=$appliance_id \
  browser_run "$here/dashboard.test.mjs" "$STACK_UP_URL" "$build" ||
  fail "the browser test failed (screenshot: $build/browser/dashboard.png)"
echo "PASS: the support dashboard in Chromium"
