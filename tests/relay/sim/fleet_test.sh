#!/usr/bin/env bash
# The "Done when" fleet test of issue 6 (docs/relay-sim.md, "Fleet test"): the real `relay serve`
# and `relay-sim run` on loopback. 2,000 simulated clients (5 % passive, two platforms) check in at
# 1.0.0; signed client builds for both platforms are given to the relay (--builds + SIGHUP); every
# client reaches 2.0.0 (relay-sim --until-version and the relay's SIGUSR2 export: all "current").
# Checked on the way: the concurrency cap (simulator and relay export), the bandwidth cap over
# every 1-second window while a backlog exists and its average use, a technician's request moving
# a waiting client to the front, and a live settings change (--settings rewritten + SIGHUP).
#
# Usage: fleet_test.sh BIN_DIR SOURCE_DIR     Exit 0 pass, 1 fail. KEEP_WORK=1 keeps the files.
# Sizes can be overridden for experiments: FLEET_N, FLEET_CAP1/2, FLEET_BW1/2, FLEET_SIZE_A/B.
set -euo pipefail

bin=$(cd "${1:?usage: fleet_test.sh BIN_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: fleet_test.sh BIN_DIR SOURCE_DIR}" && pwd)
py=/usr/bin/python3
[[ -x $py ]] || py=python3
check="$py $src/tests/relay/sim/fleet_check.py"

n=${FLEET_N:-2000}
cap1=${FLEET_CAP1:-128}
bw1=${FLEET_BW1:-6291456}     # 6 MiB/s
cap2=${FLEET_CAP2:-64}
bw2=${FLEET_BW2:-8388608}     # 8 MiB/s
size_a=${FLEET_SIZE_A:-65536}
size_b=${FLEET_SIZE_B:-81920}
front_after=${FLEET_FRONT_AFTER:-200}   # installs before the technician asks
switch_at=$((n / 2))                    # clients current at 2.0.0 before the settings change

for tool in relay relay-sim; do
  [[ -x "$bin/$tool" ]] || { echo "FAIL: $bin/$tool not found; build it first"; exit 1; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/upkeep-fleet.XXXXXX")
relay_pid=
sim_pid=
cleanup() {
  local pid
  for pid in $sim_pid $relay_pid; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $sim_pid $relay_pid; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [[ -n "${KEEP_WORK:-}" ]]; then echo "work kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
cd "$work"

fail() {
  echo "FAIL: $*"
  echo "-- relay log (last lines, CSV exports left out):"
  grep -v '^"' relay.log 2>/dev/null | tail -n 20 || true
  echo "-- relay-sim stderr (last lines):"
  tail -n 20 sim.err 2>/dev/null || true
  exit 1
}
step() { echo "== $*"; }
now_ms() { date +%s%3N; }

# The relay's export (SIGUSR2). The CSV block is written at once under the relay's log lock, so it
# is complete once a log line follows it, or once the file stopped growing.
#   export_json    the whole export as one JSON line (fleet_check.py export), or null
#   export_brief   "ROWS UPGRADING CURRENT_AT_2.0.0" (awk: cheap, for the samples during the wave), or "-"
export_json() {
  local offset size prev=-1 out
  offset=$(stat -c %s relay.log)
  kill -USR2 "$relay_pid"
  for _ in $(seq 100); do
    sleep 0.03
    size=$(stat -c %s relay.log)
    if [[ $size -gt $offset ]]; then
      out=$($check export relay.log "$offset" "$([[ $size == "$prev" ]] && echo 1 || echo 0)")
      [[ $out != null ]] && { echo "$out"; return 0; }
    fi
    prev=$size
  done
  echo null
}
export_brief() {
  local offset size prev=-1 out rows up cur done
  offset=$(stat -c %s relay.log)
  kill -USR2 "$relay_pid"
  for _ in $(seq 100); do
    sleep 0.03
    size=$(stat -c %s relay.log)
    if [[ $size -gt $offset ]]; then
      out=$(tail -c +$((offset + 1)) relay.log | awk -v v=2.0.0 '
        done { next }
        !h && index($0, "\"id\",\"platform\",\"version\",\"state\"") == 1 { h = 1; next }
        h && /^"/ { split($0, f, "\",\""); rows++; if (f[4] == "upgrading") up++; if (f[4] == "current" && f[3] == v) cur++; next }
        h && /^relay:/ { done = 1 }
        END { if (h) print rows + 0, up + 0, cur + 0, done + 0; else print "-" }')
      read -r rows up cur done <<<"$out"
      if [[ $rows != - && ($done == 1 || $size == "$prev") ]]; then echo "$rows $up $cur"; return 0; fi
    fi
    prev=$size
  done
  echo -
}

step "provisioning: TLS certificate, $n clients on two platforms, vendor key, signed builds"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -days 2 -keyout key.pem -out cert.pem >openssl.log 2>&1 ||
  fail "openssl: $(cat openssl.log)"
"$bin/relay-sim" make-clients "$n" --prefix sim- -o clients.json --passive-fraction 0.05 \
  --platform linux-x86_64 --platform linux-aarch64 >make.log 2>&1 || fail "make-clients: $(cat make.log)"
"$bin/relay-sim" make-build --key vendor.key --platform linux-x86_64 --version 2.0.0 --size "$size_a" \
  -o build-x86_64.bin --builds builds.next.json >>make.log 2>&1 || fail "make-build: $(cat make.log)"
"$bin/relay-sim" make-build --key vendor.key --platform linux-aarch64 --version 2.0.0 --size "$size_b" \
  -o build-aarch64.bin --builds builds.next.json >>make.log 2>&1 || fail "make-build: $(cat make.log)"
echo '{"builds": []}' >builds.json
echo "{\"max_concurrent_client_upgrades\": $cap1, \"max_client_upgrade_bandwidth\": $bw1}" >settings.json

step "relay serve (cap $cap1, $bw1 B/s, no builds yet)"
"$bin/relay" serve --cert cert.pem --key key.pem --clients clients.json --listen 127.0.0.1:0 \
  --builds builds.json --settings settings.json >relay.log 2>&1 &
relay_pid=$!
port=
for _ in $(seq 100); do
  port=$(sed -n 's/^relay: listening on 127.0.0.1:\([0-9]*\)$/\1/p' relay.log)
  [[ -n $port ]] && break
  kill -0 "$relay_pid" 2>/dev/null || fail "the relay exited"
  sleep 0.1
done
[[ -n $port ]] || fail "the relay did not listen within 10 s"

step "relay-sim run: the fleet checks in at 1.0.0"
start_ms=$(now_ms)
"$bin/relay-sim" run --relay "127.0.0.1:$port" --ca cert.pem --secrets clients.json.secrets \
  --vendor-key vendor.key.pub --until-version 2.0.0 --timeout 150 --passive-interval 3 \
  --front-request "$front_after" --hold 3 --summary summary.json >sim.out 2>sim.err &
sim_pid=$!
checked_in=0
for _ in $(seq 60); do
  sleep 1
  kill -0 "$sim_pid" 2>/dev/null || fail "relay-sim exited early"
  read -r rows _ _ <<<"$(export_brief)"
  [[ $rows == - ]] && continue
  checked_in=$rows
  [[ $checked_in -ge $n ]] && break
done
[[ $checked_in -ge $n ]] || fail "only $checked_in of $n clients checked in within 60 s"
echo "   all $n checked in after $(( ($(now_ms) - start_ms) / 1000 )) s"

step "the new client builds are given to the relay (--builds file + SIGHUP)"
builds_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
sleep 1  # check-ins are recorded to the second: later ones must compare as later
cp builds.next.json builds.json
kill -HUP "$relay_pid"
wave_ms=$(now_ms)

step "the wave; at $switch_at current, the settings change to cap $cap2, $bw2 B/s (SIGHUP)"
relay_max=0
relay_max_after=0
samples=0
switch_before=0
switch_after=0
settled_after=0
while kill -0 "$sim_pid" 2>/dev/null && ! grep -q holding sim.err; do
  read -r rows up cur <<<"$(export_brief)"
  if [[ $rows != - ]]; then
    samples=$((samples + 1))
    [[ $up -gt $relay_max ]] && relay_max=$up
    if [[ $switch_after -gt 0 ]]; then
      # Lowering the cap cancels nothing: from the first sample at or under it, it must hold.
      [[ $settled_after == 0 && $up -le $cap2 ]] && settled_after=1
      [[ $settled_after == 1 && $up -gt $relay_max_after ]] && relay_max_after=$up
    elif [[ $cur -ge $switch_at ]]; then
      echo "{\"max_concurrent_client_upgrades\": $cap2, \"max_client_upgrade_bandwidth\": $bw2}" >settings.json
      switch_before=$(now_ms)
      kill -HUP "$relay_pid"
      switch_after=$(now_ms)
      echo "   switched at $cur current, $(( (switch_before - wave_ms) / 1000 )) s into the wave"
    fi
  fi
  sleep 0.7
  [[ $(( $(now_ms) - wave_ms )) -lt 160000 ]] || fail "the wave did not end within 160 s"
done
[[ $switch_after -gt 0 ]] || fail "the wave ended before $switch_at clients were current"
echo "   $samples samples of the relay's export during the wave"
grep -q "all $n clients online" sim.err || fail "relay-sim did not reach 2.0.0 with every client online: $(tail -n 3 sim.err)"

relay_cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$relay_pid/stat")
step "the relay's export while every client is connected"
final=$(export_json)
for _ in $(seq 100); do kill -0 "$sim_pid" 2>/dev/null || break; sleep 0.1; done
rc=0
wait "$sim_pid" || rc=$?
sim_pid=
[[ $rc == 0 ]] || fail "relay-sim exited $rc"
grep -q "settings: max_concurrent_client_upgrades $cap2" relay.log || fail "the relay did not log the new settings"

step "checks"
cat >params.json <<EOF
{"n": $n, "version": "2.0.0", "cap1": $cap1, "bw1": $bw1, "cap2": $cap2, "bw2": $bw2,
 "switch_before_unix_ms": $switch_before, "switch_after_unix_ms": $switch_after,
 "relay_max_upgrading": $relay_max, "relay_max_upgrading_after": $relay_max_after,
 "relay_log": "relay.log", "relay_cpu_seconds": $relay_cpu, "builds_utc": "$builds_utc", "export": $final}
EOF
$check summary summary.json params.json || fail "see the checks above"
echo "PASS: fleet of $n reached 2.0.0 in $(( ($(now_ms) - wave_ms) / 1000 )) s of wave, $(( ($(now_ms) - start_ms) / 1000 )) s in all"
