#!/usr/bin/env bash
# Interop test: a repository written by `upk repo` must be accepted by an independent TUF client
# (tuf-js 3, pinned in package-lock.json) and by our own upkeep-tuf-client, both fetching it from
# a real static web server, and the tampering and freeze defences must fire in both.
#
# Usage: tufjs_interop_test.sh BIN_DIR   (BIN_DIR holds upk and upkeep-tuf-client)
# Exit 0 pass, 1 fail, 77 skip (only when tests/interop/node_modules is missing).
set -euo pipefail

bin=${1:?usage: tufjs_interop_test.sh BIN_DIR}
here=$(cd "$(dirname "$0")" && pwd)
upk="$bin/upk"
tufc="$bin/upkeep-tuf-client"

if [[ ! -d "$here/node_modules/tuf-js" ]]; then
  echo "SKIP: $here/node_modules/tuf-js is missing; run 'cd tests/interop && npm ci' (tools/test does)"
  exit 77
fi
command -v node >/dev/null || { echo "FAIL: node is not installed"; exit 1; }
command -v python3 >/dev/null || { echo "FAIL: python3 is not installed (serves the repository)"; exit 1; }
[[ -x "$upk" ]] || { echo "FAIL: $upk not found; build the upk target first"; exit 1; }
[[ -x "$tufc" ]] || { echo "FAIL: $tufc not found; build the upkeep-tuf-client target first"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/upk-tufjs.XXXXXX")
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; exit 1; }
step() { echo "== $*"; }

repo="$work/repo"
cd "$work"

step "keys"
for role in root targets snapshot timestamp release newroot; do
  "$upk" keygen "$work/$role.key" >/dev/null
done
init_keys=(--root-key root.key --targets-key targets.key --snapshot-key snapshot.key --timestamp-key timestamp.key)
pub_keys=(--targets-key targets.key --snapshot-key snapshot.key --timestamp-key timestamp.key)

step "targets"
# A real .upk when `upk pack` is available in this build, else a plain file.
mkdir -p payload/bin
head -c 300000 /dev/urandom >payload/bin/tool
echo "first release" >payload/README
if "$upk" pack --help >/dev/null 2>&1 &&
  "$upk" pack --name demo --version 1.0.0 --kind software --key release.key --dir payload -o demo.upk >/dev/null; then
  first_file=demo.upk
  first_target=demo/demo-1.0.0.upk
  echo "target: .upk package made with upk pack ($first_target)"
else
  cp payload/bin/tool tool.bin
  first_file=tool.bin
  first_target=tool.bin
  echo "target: plain file (upk pack not available in this build)"
fi

step "upk repo init / add / publish"
"$upk" repo init "$repo" "${init_keys[@]}" >/dev/null
"$upk" repo add "$repo" "$first_file" >/dev/null
"$upk" repo publish "$repo" "${pub_keys[@]}" >/dev/null
cp "$repo/metadata/1.root.json" trusted-root.json

step "serve $repo on 127.0.0.1"
port=""
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  candidate=$((20000 + RANDOM % 40000))
  python3 -m http.server --bind 127.0.0.1 "$candidate" --directory "$repo" >"$work/server.log" 2>&1 &
  server_pid=$!
  # Ready when our own process serves our own root.json (not some other listener on the port).
  for _ in $(seq 1 40); do
    if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    if curl -sf --max-time 1 "http://127.0.0.1:$candidate/metadata/1.root.json" -o "$work/probe.json" 2>/dev/null &&
      cmp -s "$work/probe.json" trusted-root.json; then
      port=$candidate
      break
    fi
    sleep 0.1
  done
  [[ -n "$port" ]] && break
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
done
[[ -n "$port" ]] || fail "could not start a static web server: $(tail -n 3 "$work/server.log")"
base="http://127.0.0.1:$port"
echo "serving on $base"

# verify CACHE TARGET OUT: runs tuf-js; its stderr lands in $work/client.err.
verify() {
  timeout 60 node "$here/tufjs_verify.js" --metadata-url "$base/metadata/" --targets-url "$base/targets/" \
    --root trusted-root.json --cache "$1" --target "$2" --out "$3" 2>"$work/client.err"
}

# ours CACHE TARGET: runs upkeep-tuf-client (initialised from the same trusted root on first use);
# the verified file lands in CACHE/targets under the percent-encoded target path.
ours() {
  mkdir -p "$1/metadata" "$1/targets"
  [[ -f "$1/metadata/root.json" ]] || "$tufc" --metadata-dir "$1/metadata" init trusted-root.json >/dev/null
  timeout 60 "$tufc" --metadata-dir "$1/metadata" --metadata-url "$base/metadata" --target-name "$2" \
    --target-base-url "$base/targets" --target-dir "$1/targets" download >/dev/null 2>"$work/ours.err"
}
ours_file() { echo "$1/targets/${2//\//%2F}"; }

step "(a) tuf-js refreshes and downloads $first_target"
verify cache-a "$first_target" out-a.bin >/dev/null || fail "tuf-js refused a good repository: $(cat client.err)"
cmp -s out-a.bin "$first_file" || fail "downloaded bytes differ from $first_file"
echo "ok: downloaded bytes match"
ours ours-a "$first_target" || fail "upkeep-tuf-client refused a good repository: $(cat ours.err)"
cmp -s "$(ours_file ours-a "$first_target")" "$first_file" || fail "upkeep-tuf-client: downloaded bytes differ"
echo "ok: upkeep-tuf-client downloaded the same bytes"

step "(b) a tampered target file is refused"
sha256=$(sha256sum "$first_file" | cut -d' ' -f1)
served="$repo/targets/$(dirname "$first_target")/$sha256.$(basename "$first_target")"
served=${served/\/.\//\/}
[[ -f "$served" ]] || fail "hash-prefixed target file $served is missing"
cp "$served" pristine.bin
python3 - "$served" <<'EOF'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(1000)
    b = f.read(1)
    f.seek(1000)
    f.write(bytes([b[0] ^ 0xFF]))
EOF
if verify cache-b "$first_target" out-b.bin >/dev/null; then fail "tuf-js accepted a tampered target"; fi
grep -qiE "hash|length" client.err || fail "tuf-js failed for another reason than the tampering: $(cat client.err)"
[[ ! -s out-b.bin ]] || fail "tuf-js wrote out the tampered target"
echo "ok: refused ($(head -c 200 client.err))"
if ours ours-b "$first_target"; then fail "upkeep-tuf-client accepted a tampered target"; fi
grep -qiE "hash|length|digest" ours.err || fail "upkeep-tuf-client failed for another reason: $(cat ours.err)"
[[ -z "$(ls -A ours-b/targets)" ]] || fail "upkeep-tuf-client left a file in the target dir"
echo "ok: upkeep-tuf-client refused ($(head -c 200 ours.err))"
cat pristine.bin >"$served"
cmp -s "$served" "$first_file" || fail "could not restore the target file"

step "(c) an expired timestamp is refused"
"$upk" repo timestamp "$repo" --timestamp-key timestamp.key --expires-at 2000-01-01T00:00:00Z >/dev/null
if verify cache-c "$first_target" out-c.bin >/dev/null; then fail "tuf-js accepted an expired timestamp"; fi
grep -qi "expired" client.err || fail "tuf-js failed for another reason than expiry: $(cat client.err)"
echo "ok: refused ($(head -c 200 client.err))"
if ours ours-c "$first_target"; then fail "upkeep-tuf-client accepted an expired timestamp"; fi
grep -qi "expire" ours.err || fail "upkeep-tuf-client failed for another reason than expiry: $(cat ours.err)"
echo "ok: upkeep-tuf-client refused ($(head -c 200 ours.err))"

step "(d) a second publish with a new target is seen"
echo "second release $(date +%s%N)" >notes.txt
"$upk" repo add "$repo" notes.txt --path docs/notes.txt >/dev/null
"$upk" repo publish "$repo" "${pub_keys[@]}" >/dev/null
# The client of (a) continues from the metadata it trusted then (versions must only go up).
verify cache-a docs/notes.txt out-d.txt >/dev/null || fail "tuf-js refused the second publish: $(cat client.err)"
cmp -s out-d.txt notes.txt || fail "new target bytes differ"
verify cache-d "$first_target" out-d.bin >/dev/null || fail "first target lost after the second publish: $(cat client.err)"
cmp -s out-d.bin "$first_file" || fail "first target bytes differ after the second publish"
echo "ok: new target downloaded, old one still valid"
ours ours-a docs/notes.txt || fail "upkeep-tuf-client refused the second publish: $(cat ours.err)"
cmp -s "$(ours_file ours-a docs/notes.txt)" notes.txt || fail "upkeep-tuf-client: new target bytes differ"
echo "ok: upkeep-tuf-client sees the new target"

step "(e) a root rotation is followed from the old trusted root"
"$upk" repo rotate-root "$repo" --old-root-key root.key --root-key newroot.key >/dev/null
verify cache-a docs/notes.txt out-e.txt >/dev/null || fail "tuf-js refused the rotated root: $(cat client.err)"
node -e 'const r = require(process.argv[1]); if (r.signed.version !== 2) process.exit(1);' "$work/cache-a/metadata/root.json" ||
  fail "tuf-js did not move to root version 2"
echo "ok: tuf-js trusts root v2"
ours ours-a docs/notes.txt || fail "upkeep-tuf-client refused the rotated root: $(cat ours.err)"
node -e 'const r = require(process.argv[1]); if (r.signed.version !== 2) process.exit(1);' "$work/ours-a/metadata/root.json" ||
  fail "upkeep-tuf-client did not move to root version 2"
echo "ok: upkeep-tuf-client trusts root v2"

echo "PASS: tuf-js and upkeep-tuf-client accept upk repositories and refuse tampered and expired ones"
