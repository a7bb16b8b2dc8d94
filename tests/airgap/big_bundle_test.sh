#!/usr/bin/env bash
# A 2 GiB bundle end to end, to show that neither side holds it in memory: the updater builds and
# serves it, the agent imports and installs it, and both stay flat (docs/airgap.md). Real
# processes on loopback: PostgreSQL, keyserver, updater, upk, appliance-agent.
#
# The updater's resident memory is sampled every 50 ms while it builds and serves the bundle; the
# agent's peak comes from /usr/bin/time. Limits: the updater grows by less than 64 MiB, the agent
# peaks under 96 MiB, for a bundle of BIG_MIB (default 2048) MiB. The figures are printed on the
# last line ("memory: ...") for docs/benchmarks.md.
#
# Usage: big_bundle_test.sh BIN_DIR SOURCE_DIR     Exit 0 pass, 1 fail.
set -euo pipefail

bin=$(cd "${1:?usage: big_bundle_test.sh BIN_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: big_bundle_test.sh BIN_DIR SOURCE_DIR}" && pwd)
big_mib=${BIG_MIB:-2048}
[[ -x /usr/bin/time ]] || { echo "FAIL: /usr/bin/time is missing (Debian package 'time'; tools/deps installs it)"; exit 1; }

base=${TMPDIR:-/var/tmp}
need_kib=$(((big_mib * 8 + 1024) * 1024))
avail_kib=$(df -Pk "$base" | awk 'NR == 2 {print $4}')
if ((avail_kib < need_kib)); then
  echo "SKIP: $((need_kib / 1024)) MiB of free disk needed under $base, $((avail_kib / 1024)) MiB free"
  exit 0
fi
source "$src/tests/lib/e2e.sh"
E2E_TMP=$base e2e_begin big-bundle upk updater keyserver appliance-agent
sampler=
e2e_on_exit() { [[ -z "$sampler" ]] || kill "$sampler" 2>/dev/null; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
upk=$bin/upk
agent() { local dir=$1; shift; "$bin/appliance-agent" --config "$dir/agent.json" "$@"; }

step "PostgreSQL, keyserver, updater; repository; base 1.0.0 and a $big_mib MiB base 1.1.0 published"
export STACK_FAST_KDF=1
stack_start_pg
stack_start_keyserver
stack_start_updater
export UPKEEP_SERVER=$STACK_UP_URL
"$upk" keygen root.key >/dev/null
"$upk" keygen targets.key >/dev/null
UPKEEP_TOKEN=$(cat stack/tokens/admin) "$upk" repo bootstrap --root-key root.key --targets-key targets.key \
  >bootstrap.out 2>&1 || fail "bootstrap: $(cat bootstrap.out)"
curl -sf "$STACK_UP_URL/repo/metadata/1.root.json" -o trusted-root.json || fail "root v1 not served"
export UPKEEP_TOKEN=$(cat stack/tokens/publisher)
mkdir -p small/bin big/data
echo 1.0.0 >small/VERSION
"$upk" -q pack --name base --version 1.0.0 --kind base --key targets.key --dir small -o base-1.0.0.upk >/dev/null || fail "pack 1.0.0"
echo 1.1.0 >big/VERSION
head -c "$((big_mib << 20))" /dev/urandom | split -b $((256 << 20)) -a 3 -d - big/data/part
"$upk" -q pack --name base --version 1.1.0 --kind base --key targets.key --dir big -o base-1.1.0.upk >/dev/null || fail "pack 1.1.0"
rm -rf big
for r in base-1.0.0 base-1.1.0; do
  "$upk" publish "$r.upk" --targets-key targets.key >"publish-$r.out" 2>&1 || fail "publish $r: $(cat "publish-$r.out")"
done
rm -f base-1.1.0.upk

step "appliance on base 1.0.0, enrolled, then cut off; its download key"
a=$work/appliance
mkdir -p "$a"
agent "$a" init --state-dir "$a/state" --system-root "$a/system" --updater http://127.0.0.1:9 \
  --director-key stack/director.pub --trust-root trusted-root.json >init.out 2>&1 || fail "init: $(cat init.out)"
agent "$a" provision base-1.0.0.upk >prov.out 2>&1 || fail "provision: $(cat prov.out)"
stack_licence "Big Corp" licence.key
jq --arg u "$STACK_UP_URL" '.updater_url = $u' "$a/agent.json" >"$a/agent.json.new" && mv "$a/agent.json.new" "$a/agent.json"
agent "$a" enrol --licence-key-file licence.key >enrol.out 2>&1 || fail "enrol: $(cat enrol.out)"
jq '.updater_url = "http://127.0.0.1:9"' "$a/agent.json" >"$a/agent.json.new" && mv "$a/agent.json.new" "$a/agent.json"
agent "$a" --json download-key >key.json 2>&1 || fail "download-key: $(cat key.json)"
body=$(jq -n --arg k "$(jq -r .download_key key.json)" '{download_key: $k}')

step "updater: build and serve the bundle while its memory is sampled"
up_pid=$STACK_UP_PID
up_before=$(rss_kib "$up_pid")
(
  while [[ ! -e "$work/stop-sampler" ]]; do rss_kib "$up_pid" >>"$work/rss.samples" || break; sleep 0.05; done
) &
sampler=$!
curl -sf -H 'Content-Type: application/json' -d "$body" "$STACK_UP_URL/api/v1/portal/bundles" >bundle.json ||
  fail "POST /api/v1/portal/bundles"
url=$(jq -r .url bundle.json)
[[ "$url" == http* ]] || url=$STACK_UP_URL$url
curl -sf -o big.upkb "$url" || fail "GET the bundle"
touch "$work/stop-sampler"
wait "$sampler" || true
sampler=
up_peak=$(sort -n rss.samples | tail -n 1)
bundle_bytes=$(stat -c %s big.upkb)
((bundle_bytes > (big_mib << 20))) || fail "the bundle ($bundle_bytes bytes) is smaller than its package"
up_growth=$((up_peak - up_before))

step "agent: import and install the bundle under /usr/bin/time"
/usr/bin/time -f '%M' -o agent.maxrss "$bin/appliance-agent" --config "$a/agent.json" import big.upkb >import.out 2>&1 ||
  fail "import: $(tail -n 20 import.out)"
agent_peak=$(tail -n 1 agent.maxrss)
agent "$a" --json status | jq -e '.installed.base.version == "1.1.0"' >/dev/null || fail "base 1.1.0 is not installed"

echo "memory: bundle $((bundle_bytes >> 20)) MiB; updater RSS $((up_before / 1024)) MiB before, peak $((up_peak / 1024)) MiB while building and serving (+$((up_growth / 1024)) MiB); agent import+install peak RSS $((agent_peak / 1024)) MiB"
((up_growth < 64 * 1024)) || fail "the updater grew by $((up_growth / 1024)) MiB while streaming the bundle"
((agent_peak < 96 * 1024)) || fail "the agent peaked at $((agent_peak / 1024)) MiB while importing the bundle"
echo "PASS: a $((bundle_bytes >> 20)) MiB bundle streamed with flat memory on both sides"
