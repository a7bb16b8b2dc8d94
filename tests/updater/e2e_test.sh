#!/usr/bin/env bash
# End-to-end test of the server side, as real processes on loopback: a private PostgreSQL, the
# keyserver and the updater (tools/lib/stack.sh); the operator bootstraps the TUF repository and
# publishes a chain of releases with `upk`; tuf-js and upkeep-tuf-client verify and download a
# published (encrypted) target from the running updater; a simulated appliance (fleet-sim)
# enrols with a licence and checks in, and its director-signed assignment lists the chain in
# order with content keys that open only for it; a PostgreSQL restart while it reports costs no
# report; SIGTERM stops the updater cleanly.
#
# Usage: e2e_test.sh BIN_DIR SOURCE_DIR     Exit 0 pass, 1 fail, 77 skip (tuf-js not installed).
set -euo pipefail

bin=${1:?usage: e2e_test.sh BIN_DIR SOURCE_DIR}
src=${2:?usage: e2e_test.sh BIN_DIR SOURCE_DIR}
if [[ ! -d "$src/tests/interop/node_modules/tuf-js" ]]; then
  echo "SKIP: tests/interop/node_modules/tuf-js is missing; run 'cd tests/interop && npm ci' (tools/test does)"
  exit 77
fi
source "$src/tests/lib/e2e.sh"
e2e_begin e2e upk updater keyserver fleet-sim upkeep-tuf-client
upk="$bin/upk"
sim="$bin/fleet-sim"

step "PostgreSQL, keyserver, updater"
export STACK_FAST_KDF=1
stack_start_pg
stack_start_keyserver
stack_licence "ACME Corp" "$work/licence.key"
stack_start_updater
export UPKEEP_SERVER=$STACK_UP_URL
echo "updater at $STACK_UP_URL, keyserver at $STACK_KS_URL"

step "operator: offline keys, repository bootstrap"
"$upk" keygen root.key >/dev/null
"$upk" keygen targets.key >/dev/null
UPKEEP_TOKEN=$(cat "$work/stack/tokens/admin") "$upk" repo bootstrap --root-key root.key --targets-key targets.key \
  >bootstrap.out 2>&1 || fail "upk repo bootstrap: $(cat bootstrap.out)"
curl -sf "$STACK_UP_URL/repo/metadata/1.root.json" -o trusted-root.json || fail "root v1 not served"

step "operator: pack and publish base 1.0.0, 1.1.0 and site 5.0.0, 5.1.0, 5.2.0 (5.2.0 only from 5.1.0)"
export UPKEEP_TOKEN
UPKEEP_TOKEN=$(cat "$work/stack/tokens/publisher")
publish() {  # name version kind upgrades_from requires
  local name=$1 version=$2 kind=$3 from=$4 reqs=$5
  mkdir -p "src-$name-$version/bin"
  head -c 200000 /dev/urandom >"src-$name-$version/bin/$name"
  local args=(pack --name "$name" --version "$version" --kind "$kind" --key targets.key
              --dir "src-$name-$version" -o "$name-$version.upk")
  [[ "$from" != - ]] && args+=(--upgrades-from "$from")
  [[ "$reqs" != - ]] && args+=(--requires "$reqs")
  "$upk" -q "${args[@]}" >/dev/null || fail "upk pack $name $version"
  "$upk" publish "$name-$version.upk" --targets-key targets.key >"publish-$name-$version.out" 2>&1 ||
    fail "upk publish $name $version: $(cat "publish-$name-$version.out")"
}
publish base 1.0.0 base - -
publish base 1.1.0 base - -
publish site 5.0.0 software - base\>=1.0.0
publish site 5.1.0 software - base\>=1.1.0
publish site 5.2.0 software 5.1.0 base\>=1.1.0
"$upk" publish site-5.2.0.upk --targets-key targets.key >again.out 2>&1 && fail "publishing the same release twice succeeded"
grep -Eq 'release_exists|already published' again.out || fail "second publish: expected release_exists, got: $(cat again.out)"

step "tuf-js and upkeep-tuf-client verify and download site 5.2.0 from the running updater"
want=$(curl -sf -H "Authorization: Bearer $UPKEEP_TOKEN" "$STACK_UP_URL/api/v1/releases/site/5.2.0" | jq -r .release.sha256)
target=$(curl -sf -H "Authorization: Bearer $UPKEEP_TOKEN" "$STACK_UP_URL/api/v1/releases/site/5.2.0" | jq -r .release.target_path)
[[ ${#want} == 64 ]] || fail "release site 5.2.0 not listed"
timeout 60 node "$src/tests/interop/tufjs_verify.js" --metadata-url "$STACK_UP_URL/repo/metadata/" \
  --targets-url "$STACK_UP_URL/repo/targets/" --root trusted-root.json --cache cache-js \
  --target "$target" --out out-js.bin >/dev/null 2>client.err || fail "tuf-js refused: $(cat client.err)"
[[ "$(sha256sum out-js.bin | cut -d' ' -f1)" == "$want" ]] || fail "tuf-js: downloaded bytes differ from the release"
mkdir -p ours/metadata ours/targets
"$bin/upkeep-tuf-client" --metadata-dir ours/metadata init trusted-root.json >/dev/null
timeout 60 "$bin/upkeep-tuf-client" --metadata-dir ours/metadata --metadata-url "$STACK_UP_URL/repo/metadata" \
  --target-name "$target" --target-base-url "$STACK_UP_URL/repo/targets" --target-dir ours/targets download \
  >/dev/null 2>ours.err || fail "upkeep-tuf-client refused: $(cat ours.err)"
echo "ok: both clients verified $target ($want)"

step "appliance: identity, enrolment with the licence, check-in on base 1.0.0 + site 5.0.0"
"$sim" identity new appliance.identity >/dev/null || fail "fleet-sim identity new"
"$sim" enrol --server "$STACK_UP_URL" --identity appliance.identity --licence-key-file "$work/licence.key" \
  >enrol.out 2>&1 || fail "enrolment: $(cat enrol.out)"
"$sim" checkin --server "$STACK_UP_URL" --identity appliance.identity --installed base=1.0.0 --installed site=5.0.0 \
  --director-key "$work/stack/director.pub" --json >checkin.json 2>checkin.err || fail "check-in: $(cat checkin.err)"
steps=$(jq -r '[.assignment.signed.steps[] | .name + "-" + .version] | join(" ")' checkin.json)
echo "assignment: $steps"
[[ "$steps" == "base-1.1.0 site-5.1.0 site-5.2.0" ]] || fail "unexpected plan: $steps"
"$sim" checkin --server "$STACK_UP_URL" --identity appliance.identity --installed base=1.0.0 --installed site=5.0.0 \
  --director-key "$work/stack/director.pub" >checkin.txt 2>&1 || fail "verified check-in: $(cat checkin.txt)"

step "a PostgreSQL restart while the appliance reports costs no report"
id=$(jq -r .assignment.signed.appliance_id checkin.json)
"$src/tools/pg" stop "$work/stack/pg" >/dev/null
"$sim" report --server "$STACK_UP_URL" --identity appliance.identity --event download --name base --version 1.1.0 \
  >down.out 2>&1 && fail "a report succeeded while the database was down"
grep -q 503 down.out || fail "expected 503 while the database is down: $(cat down.out)"
"$src/tools/pg" start "$work/stack/pg" >/dev/null
ok=0
for _ in $(seq 1 50); do
  if "$sim" report --server "$STACK_UP_URL" --identity appliance.identity --event success --name base \
    --version 1.1.0 >up.out 2>&1; then ok=1; break; fi
  sleep 0.2
done
((ok)) || fail "the updater did not recover after the database restart: $(cat up.out)"
events=$(curl -sf -H "Authorization: Bearer $UPKEEP_TOKEN" "$STACK_UP_URL/api/v1/appliances/$id" | jq '.appliance.events | length')
[[ "$events" -ge 1 ]] || fail "the report is not recorded"

step "operator views: appliance, audit"
"$upk" appliance show "$id" >show.out 2>&1 || fail "upk appliance show: $(cat show.out)"
UPKEEP_TOKEN=$(cat "$work/stack/tokens/admin") "$upk" audit --limit 50 >audit.out 2>&1 || fail "upk audit: $(cat audit.out)"
grep -q release.publish audit.out || fail "release.publish missing from the audit log"

step "SIGTERM stops the updater with exit 0"
kill -TERM "$STACK_UP_PID"
code=0
wait "$STACK_UP_PID" || code=$?
[[ $code -eq 0 ]] || fail "updater exited with $code after SIGTERM"
grep -q "updater: stopped" "$work/stack/updater.log" || fail "no clean-stop line in the log"
echo "PASS"
