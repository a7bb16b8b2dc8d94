#!/usr/bin/env bash
# Self-test of the browser harness (lib/harness.mjs) against static pages on loopback: a good page
# passes; a bad one fails and lists each of its problems; both leave a screenshot.
# Usage: harness_test.sh BUILD_DIR    Exit 0 pass, 1 fail, 77 skip (no node_modules or chromium).
set -euo pipefail
build=$(mkdir -p "${1:?usage: harness_test.sh BUILD_DIR}" && cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/run.sh"
browser_preflight
command -v python3 >/dev/null || { echo "FAIL: python3 is not installed (serves the pages)"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/upkeep-browser-harness.XXXXXX")
server_pid=""
cleanup() {
  browser_stop
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

port=""
for _ in 1 2 3 4 5; do
  candidate=$((20000 + RANDOM % 40000))
  python3 -m http.server --bind 127.0.0.1 "$candidate" --directory "$here/fixtures" >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 50); do
    kill -0 "$server_pid" 2>/dev/null || break
    if curl -sf --max-time 1 "http://127.0.0.1:$candidate/good.html" | grep -q "good page"; then port=$candidate; break; fi
    sleep 0.1
  done
  [[ -n "$port" ]] && break
  kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""
done
[[ -n "$port" ]] || fail "could not start a static web server: $(tail -n 3 "$work/server.log")"

echo "== good page: passes"
HARNESS_PAGE=good.html browser_run "$here/harness.test.mjs" "http://127.0.0.1:$port" "$build" >"$work/good.out" 2>&1 ||
  fail "the good page failed: $(cat "$work/good.out")"
grep -q 'field message: "Name is required." (aria-describedby)' "$work/good.out" || fail "no aria-describedby message: $(cat "$work/good.out")"
[[ -s "$build/browser/harness-good.png" ]] || fail "no screenshot of the good page"

echo "== bad page: fails, listing each problem"
rc=0
HARNESS_PAGE=bad.html BROWSER_TEST_SECONDS=90 browser_run "$here/harness.test.mjs" "http://127.0.0.1:$port" "$build" >"$work/bad.out" 2>&1 || rc=$?
cat "$work/bad.out"
[[ $rc == 1 ]] || fail "the bad page: exit $rc, expected 1"
for want in 'field message: "Name is required." (sibling)' 'console error: harness-selftest console error' \
  'uncaught page error: harness-selftest uncaught' 'console error: Failed to load resource: the server responded with a status of 404' \
  'request to a non-loopback address refused: http://example.invalid/remote.png'; do
  grep -qF "$want" "$work/bad.out" || fail "the bad page's report lacks: $want"
done
[[ -s "$build/browser/harness-bad.png" ]] || fail "no screenshot of the failed test"
echo "PASS: the harness catches console errors, page errors, failed and non-loopback requests, and saves screenshots"
