#!/usr/bin/env bash
# End-to-end test of air-gapped updates (docs/airgap.md), as real processes: a private
# PostgreSQL, the keyserver and the updater on loopback, the operator's `upk`, and appliance agents
# that run in their own network namespace (`unshare --net`: not even loopback), so they have no
# route to the updater at all.
#
# An appliance on base 1.0.0 + software 7.0.0 makes a download key; the test submits it to the
# portal as a browser would (form posts), downloads the bundle, imports it on the appliance, which
# ends on base 2.0.0 + software 8.0.0 through 7.1.0; the signed install report is accepted by the
# portal and the updater's view of the appliance follows. A second submission of the same key no
# longer offers the downloaded packages until support re-enables one. Bad input on both sides is
# refused with its reason and changes nothing.
#
# Usage: airgap_test.sh BIN_DIR SOURCE_DIR     Exit 0 pass, 1 fail.
set -euo pipefail

bin=$(cd "${1:?usage: airgap_test.sh BIN_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: airgap_test.sh BIN_DIR SOURCE_DIR}" && pwd)
source "$src/tests/lib/e2e.sh"
e2e_begin airgap upk updater keyserver appliance-agent
source "$src/tests/appliance-agent/lib.sh"

# The appliance side runs without any network.
if unshare --net true 2>/dev/null; then
  offline() { local dir=$1; shift; unshare --net "$bin/appliance-agent" --config "$dir/agent.json" "$@"; }
else
  echo "note: unshare --net is not permitted here; the appliance's updater URL points nowhere instead"
  offline() { agent "$@"; }
fi
cut_off() {  # the appliance forgets the route to the updater, too
  jq '.updater_url = "http://127.0.0.1:9"' "$1/agent.json" >"$1/agent.json.new" && mv "$1/agent.json.new" "$1/agent.json"
}
# The appliance's installed versions as "NAME=VERSION ..." (sorted).
versions() { offline "$1" --json status | jq -r '.installed | to_entries | map("\(.key)=\(.value.version)") | sort | join(" ")'; }
# Everything on the appliance an import must not change when it refuses.
snapshot() {
  (cd "$1" && find system state/tuf -type f -print0 | sort -z | xargs -0 -r sha256sum &&
    find system -type l -printf '%p -> %l\n' | sort &&
    offline "$1" --json status | jq -c '[.installed, .plan]') | sha256sum
}
# Submits a download key to the portal's form and saves the page.
portal_page() { curl -s -o "$2" -w '%{http_code}' --data-urlencode "download_key=$1" "$STACK_UP_URL/portal"; }

agent_stack_up

step "two appliances, set up while still connected (identity, factory versions, enrolment), then cut off"
a=$work/appliance-a
agent_appliance "$a"
id_a=$appliance_id
b=$work/appliance-b
agent_appliance "$b"
id_b=$appliance_id
cut_off "$a"
cut_off "$b"
offline "$a" check >nocheck.out 2>&1 && fail "the cut-off appliance reached the updater: $(cat nocheck.out)"
[[ "$(versions "$a")" == "base=1.0.0 software=7.0.0" ]] || fail "unexpected factory versions: $(versions "$a")"

step "appliance: download key (text and QR code)"
offline "$a" download-key --valid-hours 24 >key.out 2>&1 || fail "download-key: $(cat key.out)"
grep -q "UPK1-" key.out || fail "no key text printed: $(cat key.out)"
grep -q "▀\|▄\|█" key.out || fail "no QR code printed"
offline "$a" --json download-key --valid-hours 24 >key.json 2>&1 || fail "download-key --json: $(cat key.json)"
key=$(jq -r .download_key key.json)
[[ "$key" == UPK1-* ]] || fail "download-key --json has no text: $(cat key.json)"
# Copy and paste through a mail client: line breaks and lower case survive.
mangled=$(tr 'A-Z' 'a-z' <<<"$key" | fold -w 37)

step "portal: the form, the key pasted as a browser posts it, the ordered updates"
code=$(curl -s -o form.html -w '%{http_code}' "$STACK_UP_URL/portal")
[[ $code == 200 ]] || fail "GET /portal: $code"
grep -qi "<form" form.html || fail "the portal page has no form"
code=$(portal_page "$mangled" offers.html)
[[ $code == 200 ]] || fail "POST /portal: $code $(head -c 400 offers.html)"
grep -q "$id_a" offers.html || fail "the offers page does not name the appliance"
for r in "base 2.0.0" "software 7.1.0" "software 8.0.0"; do
  grep -q "${r% *}.*${r#* }" offers.html || fail "the offers page does not list $r"
done
curl -sf -H 'Content-Type: application/json' -d "$(jq -n --arg k "$key" '{download_key: $k}')" \
  "$STACK_UP_URL/api/v1/portal/offers" >offers.json || fail "POST /api/v1/portal/offers"
[[ "$(jq -r '[.updates[] | "\(.name) \(.version)"] | join(",")' offers.json)" == "base 2.0.0,software 7.1.0,software 8.0.0" ]] ||
  fail "the ordered updates are not base 2.0.0, software 7.1.0, software 8.0.0: $(cat offers.json)"
jq -e '[.updates[] | select(.offered != true)] | length == 0' offers.json >/dev/null || fail "not everything offered"

step "portal: download the bundle (form post, redirect, file)"
code=$(curl -s -o /dev/null -D bundle.head -w '%{http_code}' --data-urlencode "download_key=$key" "$STACK_UP_URL/portal/bundle")
[[ $code == 303 ]] || fail "POST /portal/bundle: $code"
location=$(grep -i '^location:' bundle.head | tr -d '\r' | sed 's/^[Ll]ocation: *//')
[[ -n "$location" ]] || fail "no Location for the bundle"
[[ "$location" == http* ]] || location=$STACK_UP_URL$location
mkdir -p usb
curl -sf -o usb/update.upkb "$location" || fail "GET $location"
[[ $(stat -c %s usb/update.upkb) -gt 300000 ]] || fail "the bundle is too small to hold three packages"
grep -q "portal.bundle" <(UPKEEP_TOKEN=$(cat "$work/stack/tokens/admin") "$upk" audit 2>&1) || fail "no portal.bundle audit record"

step "appliance B refuses A's bundle; a truncated and a tampered copy are refused; nothing changes"
before_b=$(snapshot "$b")
offline "$b" import usb/update.upkb >other.out 2>&1 && fail "appliance B imported A's bundle"
grep -q "not for this appliance" other.out || fail "wrong reason for another appliance's bundle: $(cat other.out)"
[[ "$(snapshot "$b")" == "$before_b" ]] || fail "a refused import changed appliance B"
before_a=$(snapshot "$a")
size=$(stat -c %s usb/update.upkb)
head -c $((size - 1000)) usb/update.upkb >usb/truncated.upkb
offline "$a" import usb/truncated.upkb >trunc.out 2>&1 && fail "a truncated bundle was imported"
grep -q "truncated" trunc.out || fail "wrong reason for a truncated bundle: $(cat trunc.out)"
cp usb/update.upkb usb/tampered.upkb
printf '\x5a' | dd of=usb/tampered.upkb bs=1 seek=$((size - 5000)) conv=notrunc status=none
offline "$a" import usb/tampered.upkb >tamper.out 2>&1 && fail "a tampered bundle was imported"
grep -qi "tamper\|damaged" tamper.out || fail "wrong reason for a tampered bundle: $(cat tamper.out)"
[[ "$(snapshot "$a")" == "$before_a" ]] || fail "a refused import changed appliance A"
[[ "$(versions "$a")" == "base=1.0.0 software=7.0.0" ]] || fail "a refused import changed the versions"

step "appliance A: import from the USB stick, install in order through the intermediate version"
offline "$a" import usb/update.upkb >import.out 2>&1 || fail "import: $(cat import.out)"
cat import.out
[[ "$(versions "$a")" == "base=2.0.0 software=8.0.0" ]] || fail "after the import: $(versions "$a")"
offline "$a" --json history -n 1000 >history.json || fail "history"
jq -e '[.[] | select(.type == "success" and .name == "software" and .version == "7.1.0")] | length == 1' history.json >/dev/null ||
  fail "software 7.1.0 was not installed on the way"
[[ -s usb/update.upkb.report.json ]] || fail "no signed install report next to the bundle"

step "the same bundle again: refused as a replay"
offline "$a" import usb/update.upkb >replay.out 2>&1 && fail "the same bundle was imported twice"
grep -qi "replay\|already used\|older than what is installed" replay.out || fail "wrong reason for a replayed bundle: $(cat replay.out)"

step "portal: the signed install report (form post), the updater's view follows"
code=$(curl -s -o report.html -w '%{http_code}' --data-urlencode "report@usb/update.upkb.report.json" "$STACK_UP_URL/portal/report")
[[ $code == 200 ]] || fail "POST /portal/report: $code $(head -c 400 report.html)"
curl -sf -H 'Content-Type: application/json' --data-binary @usb/update.upkb.report.json \
  "$STACK_UP_URL/api/v1/portal/reports" >report2.json || fail "POST /api/v1/portal/reports"
jq -e '.accepted_events == 0' report2.json >/dev/null || fail "a report sent twice counted twice: $(cat report2.json)"
UPKEEP_TOKEN=$(cat "$work/stack/tokens/support") "$upk" appliance show "$id_a" >show.out 2>&1 || fail "upk appliance show: $(cat show.out)"
grep -q "8.0.0" show.out || fail "the updater does not know the appliance is on software 8.0.0: $(cat show.out)"

step "the same key again: the downloaded packages are no longer offered"
code=$(portal_page "$key" again.html)
[[ $code == 200 ]] || fail "second POST /portal: $code"
curl -s -H 'Content-Type: application/json' -d "$(jq -n --arg k "$key" '{download_key: $k}')" \
  "$STACK_UP_URL/api/v1/portal/offers" >again.json
jq -e '[.updates[] | select(.offered == true)] | length == 0' again.json >/dev/null ||
  fail "downloaded packages are offered again: $(cat again.json)"
code=$(curl -s -o nothing.json -w '%{http_code}' -H 'Content-Type: application/json' \
  -d "$(jq -n --arg k "$key" '{download_key: $k}')" "$STACK_UP_URL/api/v1/portal/bundles")
[[ $code == 409 ]] || fail "a second bundle for the same packages: $code $(cat nothing.json)"

step "support re-enables software 8.0.0: offered again (and audited)"
UPKEEP_TOKEN=$(cat "$work/stack/tokens/support") "$upk" appliance reenable-download "$id_a" software 8.0.0 >reenable.out 2>&1 ||
  fail "upk appliance reenable-download: $(cat reenable.out)"
curl -s -H 'Content-Type: application/json' -d "$(jq -n --arg k "$key" '{download_key: $k}')" \
  "$STACK_UP_URL/api/v1/portal/offers" >third.json
[[ "$(jq -r '[.updates[] | select(.offered == true) | "\(.name) \(.version)"] | join(",")' third.json)" == "software 8.0.0" ]] ||
  fail "after re-enabling, the offer is not software 8.0.0 alone: $(cat third.json)"
grep -q "portal.reenable" <(UPKEEP_TOKEN=$(cat "$work/stack/tokens/admin") "$upk" audit 2>&1) || fail "no portal.reenable audit record"

step "portal: a damaged key, a replayed (superseded) key and a revoked appliance's key are refused"
code=$(curl -s -o bad.json -w '%{http_code}' -H 'Content-Type: application/json' \
  -d '{"download_key": "UPK1-AAAAAA-BBBBBB"}' "$STACK_UP_URL/api/v1/portal/offers")
[[ $code == 400 ]] || fail "a damaged key: $code $(cat bad.json)"
# Keys carry their time in whole seconds: a newer key must be at least a second newer.
sleep 1
offline "$a" --json download-key --valid-hours 24 >key2.json || fail "second download key"
curl -sf -H 'Content-Type: application/json' -d "$(jq -n --arg k "$(jq -r .download_key key2.json)" '{download_key: $k}')" \
  "$STACK_UP_URL/api/v1/portal/offers" >/dev/null || fail "the newer key was refused"
code=$(curl -s -o replayed.json -w '%{http_code}' -H 'Content-Type: application/json' \
  -d "$(jq -n --arg k "$key" '{download_key: $k}')" "$STACK_UP_URL/api/v1/portal/offers")
[[ $code == 409 ]] || fail "a key older than one already used: $code $(cat replayed.json)"
offline "$b" --json download-key >keyb.json || fail "download key on B"
curl -sf -X POST -H "Authorization: Bearer $(cat "$STACK_KS_ADMIN_TOKEN_FILE")" \
  "$STACK_KS_URL/api/v1/appliances/$id_b/revoke" >/dev/null || fail "revoke B"
code=$(curl -s -o revoked.json -w '%{http_code}' -H 'Content-Type: application/json' \
  -d "$(jq -n --arg k "$(jq -r .download_key keyb.json)" '{download_key: $k}')" "$STACK_UP_URL/api/v1/portal/offers")
[[ $code == 403 ]] || fail "a revoked appliance's key: $code $(cat revoked.json)"

step "support: upk bundle for a named appliance (its re-enabled package), audited"
UPKEEP_TOKEN=$(cat "$work/stack/tokens/support") "$upk" bundle "$id_a" --download-key "$(jq -r .download_key key2.json)" \
  -o support.upkb >upkbundle.out 2>&1 && fail "upk bundle for an up-to-date appliance made a bundle"
grep -q "up to date" upkbundle.out || fail "upk bundle for an up-to-date appliance: $(cat upkbundle.out)"
UPKEEP_TOKEN=$(cat "$work/stack/tokens/support") "$upk" bundle "$id_a" --installed base=2.0.0 --installed software=7.1.0 \
  -o support.upkb >upkbundle.out 2>&1 || fail "upk bundle: $(cat upkbundle.out)"
[[ $(stat -c %s support.upkb) -gt 100000 ]] || fail "upk bundle wrote no package"
[[ ! -e support.upkb.part ]] || fail "upk bundle left its .part file"
grep -q "support.bundle" <(UPKEEP_TOKEN=$(cat "$work/stack/tokens/admin") "$upk" audit 2>&1) || fail "no support.bundle audit record"

echo "PASS: air-gapped download key, portal, bundle, import, report, re-enable"
