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

bin=$(cd "${1:?usage: agent_page_test.sh BIN_DIR SOURCE_DIR BUILD_DIR}" && pwd)
src=$(cd "${2:?usage: agent_page_test.sh BIN_DIR SOURCE_DIR BUILD_DIR}" && pwd)
build=$(mkdir -p "${3:?usage: agent_page_test.sh BIN_DIR SOURCE_DIR BUILD_DIR}" && cd "$3" && pwd)
here=$src/tests/browser
source "$here/lib/run.sh"
browser_preflight
command -v openssl >/dev/null || { echo "FAIL: openssl is not installed"; exit 1; }

source "$src/tests/lib/e2e.sh"
e2e_begin browser-agent-page upk updater keyserver appliance-agent
agent_pid=
e2e_on_exit() {
  browser_stop
  if [[ -n "$agent_pid" ]] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$agent_pid" 2>/dev/null || true
  fi
}
# The daemon's log holds the setup token: show its tail without it.
e2e_on_fail() {
  local f
  for f in agent.log agent.err; do
    [[ -f "$work/$f" ]] && { echo "-- $f (last lines, setup token hidden):"; tail -n 20 "$work/$f" | sed -E 's/(setup token )[0-9a-f]+/\1<hidden>/'; }
  done
}
source "$src/tests/appliance-agent/lib.sh"

agent_stack_up

step "an enrolled appliance on base 1.0.0 + software 7.0.0, auto_install off"
a=$work/appliance
agent_appliance "$a"
agent "$a" settings auto_install false >settings.out 2>&1 || fail "settings auto_install false: $(cat settings.out)"
agent "$a" --json check >check.json 2>check.err || fail "agent check: $(cat check.err)"
jq -e '.plan | length > 0' check.json >/dev/null || fail "agent check shows no plan: $(cat check.json)"
echo "plan: $(jq -r '[.plan[] | "\(.name) \(.version) (\(.state))"] | join(", ")' check.json)"

step "a self-signed certificate and the web section in agent.json"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$a/web.key" -out "$a/web.pem" >openssl.out 2>&1 ||
  fail "openssl: $(cat openssl.out)"
chmod 600 "$a/web.key"
jq '.web = {listen: "127.0.0.1:0", certificate: "web.pem", private_key: "web.key"}' "$a/agent.json" >agent.json.new
mv agent.json.new "$a/agent.json"

step "the agent daemon, with the updates page"
"$bin/appliance-agent" --config "$a/agent.json" run >agent.log 2>agent.err &
agent_pid=$!
origin=
for _ in $(seq 1 150); do
  origin=$(sed -nE 's|.*web: first start: open (https://127\.0\.0\.1:[0-9]+)/setup with the one-time setup token .*|\1|p' \
    agent.log agent.err | head -n 1)
  [[ -n "$origin" ]] && break
  kill -0 "$agent_pid" 2>/dev/null || fail "the agent daemon died"
  sleep 0.2
done
[[ -n "$origin" ]] || fail "the daemon logged no setup line within 30 s"
# The token goes to the browser test through a 0600 file, never through argv or the output.
umask 077
sed -nE 's|.*web: first start: open https://[^ ]+/setup with the one-time setup token ([0-9a-f]+) \(valid 24 h\).*|\1|p' \
  agent.log agent.err | head -n 1 >setup.token
umask 022
[[ -s setup.token ]] || fail "no setup token in the daemon's log line"
echo "the page: $origin"
# The daemon checks once at start: wait for it, so the check the page asks for is the next one.
for _ in $(seq 1 150); do
  grep -qE ' check: [0-9]+ update\(s\) to install|check failed' agent.log agent.err && break
  kill -0 "$agent_pid" 2>/dev/null || fail "the agent daemon died"
  sleep 0.2
done
grep -qE ' check: [0-9]+ update\(s\) to install' agent.log || fail "the daemon's first check did not succeed within 30 s"

step "chromium: the updates page"
UPKEEP_SETUP_TOKEN_FILE=$work/setup.token UPKEEP_EXPECT_PLAN_FILE=$work/check.json \
  browser_run "$here/agent_page.test.mjs" "$origin" "$build" ||
  fail "the browser test failed (screenshot: $build/browser/agent_page.png)"
grep -q "web: the administrator 'admin' was created" agent.log agent.err || fail "the daemon did not log the setup"
grep -q "web: 'admin' asked for an update check" agent.log agent.err || fail "the daemon did not log the check request"
echo "PASS: the appliance updates page in Chromium"
