#!/usr/bin/env bash
# Interop test: a repository written by `upk repo` and served by `updater serve` (not a static
# web server) must be verified by an independent TUF client (tuf-js 3) and by our own
# upkeep-tuf-client, both downloading the same bytes that were published.
#
# Usage: updater_tufjs_test.sh BIN_DIR SOURCE_DIR   (BIN_DIR holds upk, updater, upkeep-tuf-client)
# Exit 0 pass, 1 fail, 77 skip (only when SOURCE_DIR/tests/interop/node_modules/tuf-js is missing).
set -euo pipefail

bin=${1:?usage: updater_tufjs_test.sh BIN_DIR SOURCE_DIR}
src=${2:?usage: updater_tufjs_test.sh BIN_DIR SOURCE_DIR}
upk="$bin/upk"
updater="$bin/updater"
tufc="$bin/upkeep-tuf-client"

if [[ ! -d "$src/tests/interop/node_modules/tuf-js" ]]; then
  echo "SKIP: $src/tests/interop/node_modules/tuf-js is missing; run 'cd tests/interop && npm ci' (tools/test does)"
  exit 77
fi
command -v node >/dev/null || { echo "FAIL: node is not installed"; exit 1; }
command -v curl >/dev/null || { echo "FAIL: curl is not installed"; exit 1; }
for tool in "$upk" "$updater" "$tufc"; do
  [[ -x "$tool" ]] || { echo "FAIL: $tool not found; build it first"; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/upk-updater-tufjs.XXXXXX")
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*"
  [[ -f "$work/server.err" ]] && { echo "-- updater log (last lines):"; tail -n 20 "$work/server.err"; }
  exit 1
}
step() { echo "== $*"; }

cd "$work"
repo="$work/repo"

step "keys, package, repository"
for role in root targets snapshot timestamp release; do
  "$upk" keygen "$work/$role.key" >/dev/null
done
mkdir -p payload/bin
head -c 300000 /dev/urandom >payload/bin/tool
echo "first release" >payload/README
"$upk" pack --name demo --version 1.0.0 --kind software --key release.key --dir payload -o demo.upk >/dev/null ||
  fail "upk pack failed"
"$upk" repo init "$repo" --root-key root.key --targets-key targets.key --snapshot-key snapshot.key \
  --timestamp-key timestamp.key >/dev/null || fail "upk repo init failed"
"$upk" repo add "$repo" demo.upk >/dev/null || fail "upk repo add failed"
"$upk" repo publish "$repo" --targets-key targets.key --snapshot-key snapshot.key \
  --timestamp-key timestamp.key >/dev/null || fail "upk repo publish failed"
cp "$repo/metadata/1.root.json" trusted-root.json

step "updater serve --repo $repo --listen 127.0.0.1:0"
: >"$work/server.out"  # exists before the background child opens it, so the poll below can read it
: >"$work/server.err"
"$updater" serve --repo "$repo" --listen 127.0.0.1:0 --threads 1 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
port=""
for _ in $(seq 1 100); do  # at most 10 s
  kill -0 "$server_pid" 2>/dev/null || fail "updater exited early"
  port=$(sed -n 's/^updater: listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$work/server.out" | head -n 1)
  [[ -n "$port" ]] && break
  sleep 0.1
done
[[ -n "$port" ]] || fail "updater did not print its port within 10 s"
base="http://127.0.0.1:$port"
echo "serving on $base"
curl -sf --max-time 5 "$base/healthz" >/dev/null || fail "/healthz did not answer"

step "tuf-js refreshes and downloads demo/demo-1.0.0.upk through the updater"
timeout 60 node "$src/tests/interop/tufjs_verify.js" --metadata-url "$base/repo/metadata/" \
  --targets-url "$base/repo/targets/" --root trusted-root.json --cache cache-js \
  --target demo/demo-1.0.0.upk --out out-js.upk >/dev/null 2>client.err ||
  fail "tuf-js refused the served repository: $(cat client.err)"
cmp -s out-js.upk demo.upk || fail "tuf-js: downloaded bytes differ from demo.upk"
echo "ok: tuf-js downloaded the published bytes"

step "upkeep-tuf-client refreshes and downloads the same target"
mkdir -p ours/metadata ours/targets
"$tufc" --metadata-dir ours/metadata init trusted-root.json >/dev/null || fail "upkeep-tuf-client init failed"
timeout 60 "$tufc" --metadata-dir ours/metadata --metadata-url "$base/repo/metadata" \
  --target-name demo/demo-1.0.0.upk --target-base-url "$base/repo/targets" --target-dir ours/targets \
  download >/dev/null 2>ours.err || fail "upkeep-tuf-client refused the served repository: $(cat ours.err)"
cmp -s "ours/targets/demo%2Fdemo-1.0.0.upk" demo.upk || fail "upkeep-tuf-client: downloaded bytes differ"
echo "ok: upkeep-tuf-client downloaded the published bytes"

step "the request log shows the consistent-snapshot fetches"
grep -q "GET /repo/metadata/timestamp.json 200" "$work/server.err" || fail "timestamp.json fetch not logged"
grep -Eq "GET /repo/targets/demo/[0-9a-f]{64,128}\.demo-1\.0\.0\.upk 200" "$work/server.err" ||
  fail "hash-prefixed target fetch not logged"

step "SIGTERM stops the updater with exit 0"
kill -TERM "$server_pid"
code=0
for _ in $(seq 1 100); do  # at most 10 s
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$server_pid" 2>/dev/null && fail "updater still running 10 s after SIGTERM"
wait "$server_pid" || code=$?
server_pid=""
[[ $code -eq 0 ]] || fail "updater exited with $code after SIGTERM"
echo "PASS"
