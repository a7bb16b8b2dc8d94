# Shared by the browser tests of the appliance updates page (agent_*_test.sh).
#
# A test script starts with
#   set -euo pipefail
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/agent_web.sh"
#   agent_web_begin NAME "TOOL..." "$@"
# agent_web_begin NAME TOOLS BIN_DIR SOURCE_DIR BUILD_DIR: sets bin, src, build and here
# (tests/browser), sources lib/run.sh (exit 77 without chromium or node_modules), needs openssl,
# sources tests/lib/e2e.sh and runs e2e_begin NAME with the TOOLS (a space-separated list; the
# work directory becomes the current one), sets the exit hook (browser and daemon stopped) and the
# failure hook (agent_web_show_logs), then sources tests/appliance-agent/lib.sh.
#
# agent_web_up DIR [offline]: gives an appliance (made with lib.sh's agent_appliance) the `web`
# section: a self-signed certificate for 127.0.0.1, web.listen 127.0.0.1:0, then
# `appliance-agent run` with its log in ./agent.log and ./agent.err. Sets agent_pid and origin
# (https://127.0.0.1:PORT, read from the daemon's log), writes the one-time setup token to
# ./setup.token (0600; never on a command line or in the output) and waits for the daemon's first
# check, which must succeed, or with `offline` (an appliance cut off from the updater) fail.
# agent_web_stop stops the daemon.
agent_pid=

agent_web_stop() {
  if [[ -n "$agent_pid" ]] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$agent_pid" 2>/dev/null || true
  fi
}

# The daemon's log holds the setup token: show its tail without it.
agent_web_show_logs() {
  local f
  for f in agent.log agent.err; do
    [[ -f "$work/$f" ]] && { echo "-- $f (last lines, setup token hidden):"; tail -n 20 "$work/$f" | sed -E 's/(setup token )[0-9a-f]+/\1<hidden>/'; }
  done
}

agent_web_begin() {
  local name=$1 tools=$2 script
  script=$(basename "$0")
  bin=$(cd "${3:?usage: $script BIN_DIR SOURCE_DIR BUILD_DIR}" && pwd)
  src=$(cd "${4:?usage: $script BIN_DIR SOURCE_DIR BUILD_DIR}" && pwd)
  build=$(mkdir -p "${5:?usage: $script BIN_DIR SOURCE_DIR BUILD_DIR}" && cd "$5" && pwd)
  here=$src/tests/browser
  source "$here/lib/run.sh"
  browser_preflight
  command -v openssl >/dev/null || { echo "FAIL: openssl is not installed"; exit 1; }
  source "$src/tests/lib/e2e.sh"
  # shellcheck disable=SC2086 # TOOLS is a list
  e2e_begin "$name" $tools
  e2e_on_exit() {
    browser_stop
    agent_web_stop
  }
  e2e_on_fail() { agent_web_show_logs; }
  source "$src/tests/appliance-agent/lib.sh"
}

agent_web_up() {
  local a=$1 first_check=${2:-online}
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$a/web.key" -out "$a/web.pem" >openssl.out 2>&1 ||
    fail "openssl: $(cat openssl.out)"
  chmod 600 "$a/web.key"
  jq '.web = {listen: "127.0.0.1:0", certificate: "web.pem", private_key: "web.key"}' "$a/agent.json" >agent.json.new
  mv agent.json.new "$a/agent.json"
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
  local old_umask
  old_umask=$(umask)
  umask 077
  sed -nE 's|.*web: first start: open https://[^ ]+/setup with the one-time setup token ([0-9a-f]+) \(valid 24 h\).*|\1|p' \
    agent.log agent.err | head -n 1 >setup.token
  umask "$old_umask"
  [[ -s setup.token ]] || fail "no setup token in the daemon's log line"
  # The daemon checks once at start: wait for it, so a check the page asks for is the next one.
  for _ in $(seq 1 150); do
    grep -qE ' check: [0-9]+ update\(s\) to install|check failed' agent.log agent.err && break
    kill -0 "$agent_pid" 2>/dev/null || fail "the agent daemon died"
    sleep 0.2
  done
  if [[ "$first_check" == offline ]]; then
    grep -q 'check failed' agent.err || fail "the cut-off appliance's first check did not fail: $(tail -n 5 agent.log)"
  else
    grep -qE ' check: [0-9]+ update\(s\) to install' agent.log || fail "the daemon's first check did not succeed within 30 s"
  fi
}
