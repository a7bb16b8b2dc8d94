#!/usr/bin/env bash
# Check-in and download benchmark of the real updater (PostgreSQL + keyserver behind it) against
# nginx on the same machine, in the same run. Results go into docs/benchmarks.md by hand.
#
# usage: bench/checkin/run.sh [BUILD_DIR]   (build first: ninja -C BUILD_DIR fleet-sim updater keyserver)
# env:   RUNS=3 APPLIANCES=100000 (seeded) ACTIVE=$APPLIANCES (checked in before the measured runs)
#        REQUESTS=150000 (presigned per measured run, round-robin over ACTIVE) CONNECTIONS=64 WRK_THREADS=2
#        DURATION=10s (wrk)
#        THREADS=0 (updater I/O threads, 0 = one per core) SIZE_MIB=1024 RATE=560 RATE_DURATION=60
#        COLD_CONNECTIONS=16 SKIP_DOWNLOAD=0 SKIP_RATE=0
#
# (a) check-ins/s: wrk replays presigned check-ins (each exactly once: bench/checkin/replay.lua)
#     against the updater, alternating with wrk on nginx's 1 KiB file; medians. A run fails when
#     more than 1 % of the check-ins are not 2xx (a replay, a stale timestamp, a 503).
#     Before that, a cold pass (`fleet-sim load --max`, every active appliance once: each first
#     check-in has the keyserver sign an assignment) both measures the cold rate and warms up.
# (b) 1 GiB blob: PUT through the blob API, then curl GET /api/v1/blobs/sha256/HEX vs nginx sendfile.
# (c) `fleet-sim load --rate 560 --duration 60` (open loop) against the updater: p99, and the
#     updater's VmRSS/VmHWM before and after; the same generator against nginx for reference.
#
# Everything runs on loopback from a temporary directory that the EXIT trap removes, with every
# process started here stopped (PostgreSQL through tools/pg stop).
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
runs=${RUNS:-3}; appliances=${APPLIANCES:-100000}; active=${ACTIVE:-$appliances}; requests=${REQUESTS:-150000}
conns=${CONNECTIONS:-64}; wrk_threads=${WRK_THREADS:-2}; duration=${DURATION:-10s}; threads=${THREADS:-0}
size_mib=${SIZE_MIB:-1024}; rate=${RATE:-560}; rate_duration=${RATE_DURATION:-60}; cold_conns=${COLD_CONNECTIONS:-16}
installed=(--installed base=1.0.0 --installed site=5.0.0)
((active <= appliances)) || { echo "ACTIVE ($active) > APPLIANCES ($appliances)" >&2; exit 2; }

for b in fleet-sim updater keyserver; do
  [ -x "$build/bin/$b" ] || { echo "missing $build/bin/$b: ninja -C $build fleet-sim updater keyserver" >&2; exit 2; }
done
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
command -v psql >/dev/null || { echo "psql missing (tools/deps installs postgresql)" >&2; exit 2; }
fs=$build/bin/fleet-sim

work=$(mktemp -d /tmp/upkeep-bench-checkin.XXXXXX)
chmod 755 "$work"  # the PostgreSQL server and nginx's worker run as other users
pids=()
cleanup() {
  # Our own children only (a foreground fleet-sim or psql when interrupted), then the servers.
  pkill -TERM -P $$ 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  "$src/tools/pg" destroy "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits (bounded) for "NAME: listening on ADDR:PORT" in FILE and prints PORT.
listen_port() {
  local file=$1 _
  for _ in $(seq 300); do
    if grep -q 'listening on' "$file" 2>/dev/null; then sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$file" | head -1; return; fi
    sleep 0.1
  done
  echo "no 'listening on' in $file:" >&2; cat "$file" "${file%.out}.log" >&2 2>/dev/null || true; exit 1
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
mem() { awk '/^VmRSS|^VmHWM/ {printf "%s %s %s  ", $1, $2, $3}' "/proc/$1/status"; }
json_field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); 
for k in sys.argv[2].split("/"): d=d[k]
print(d)' "$1" "$2"; }

echo "== PostgreSQL, keyserver, updater, nginx in $work"
url=$("$src/tools/pg" start "$work/pg" | tail -1)
psql -qX "$url" -c "CREATE DATABASE keyserver" -c "CREATE DATABASE updater" >/dev/null
ks_db=${url/\/upkeep\?/\/keyserver?}; up_db=${url/\/upkeep\?/\/updater?}

head -c 32 /dev/urandom | base64 > "$work/passphrase"
"$build/bin/keyserver" init --state "$work/ks" --passphrase-file "$work/passphrase" --fast-kdf-for-tests > "$work/ks-init.json"
python3 -c 'import json,sys; k=json.load(open(sys.argv[1])); k=k.get("keys", k); print(json.dumps(k["director"]["public_key"]))' \
  "$work/ks-init.json" > "$work/director.pub"
"$build/bin/keyserver" serve --state "$work/ks" --passphrase-file "$work/passphrase" --database "$ks_db" \
  --listen 127.0.0.1:0 > "$work/ks.out" 2> "$work/ks.log" &
pids+=($!)
kport=$(listen_port "$work/ks.out")

echo "== seeding $appliances appliances (fleet-sim seed-sql + psql \\copy: bypasses enrolment on purpose)"
"$build/bin/updater" migrate --database "$up_db" > /dev/null
# Operator tokens before the updater starts, so its token cache has them from the start.
tok() { "$build/bin/updater" token create --database "$up_db" --name "bench-$1" --role "$1" 2> /dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' > "$work/$1.token"; }
tok admin; tok publisher
t0=$(date +%s.%N)
"$fs" seed-sql --count "$appliances" --out "$work/seed" > /dev/null
t1=$(date +%s.%N)
psql -qX "$ks_db" -f "$work/seed/keyserver.sql" > /dev/null
psql -qX "$up_db" -f "$work/seed/updater.sql" > /dev/null
t2=$(date +%s.%N)
echo "seed-sql $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b-a}') s, psql load $(awk -v a="$t1" -v b="$t2" 'BEGIN {printf "%.1f", b-a}') s"
rm -rf "$work/seed"

mkdir -p "$work/repo"
"$build/bin/updater" serve --database "$up_db" --keyserver "http://127.0.0.1:$kport" \
  --keyserver-token-file "$work/ks/updater.token" --repo "$work/repo" --listen 127.0.0.1:0 --threads "$threads" \
  > "$work/up.out" 2> "$work/up.log" &
upid=$!
pids+=("$upid")
uport=$(listen_port "$work/up.out")
server="http://127.0.0.1:$uport"

mkdir -p "$work/www"; chmod 755 "$work/www"
head -c 1024 /dev/urandom > "$work/www/small"; chmod 644 "$work/www/small"
nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# To a file, not $(...): nginx inherits the script's stdout and would hold the pipe open.
/work/shared/bench/nginx-static.sh "$work/www" "$nport" --ttl 3600 > "$work/nginx.out" 2>&1
pids+=("$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' "$work/nginx.out")")
nginx="http://127.0.0.1:$nport"
for _ in $(seq 100); do curl -sf -o /dev/null "$nginx/small" && break; sleep 0.1; done
[ "$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "$nginx/small")" = "200 1024" ] || { echo "nginx not serving" >&2; exit 1; }

# Optional: bootstrap the repository and publish two releases so assignments have steps (upk repo
# bootstrap / upk publish; PUBLISH=0 skips, leaving an empty catalog: check-ins still pay for
# authentication, lookup, planning and the assignment cache).
published="no (empty catalog)"
if [ "${PUBLISH:-1}" = 1 ] && [ -x "$build/bin/upk" ] && "$build/bin/upk" repo bootstrap --help > /dev/null 2>&1; then
  echo "== bootstrap and publish base 1.1.0, site 5.1.0 (upk)"
  mkdir -p "$work/keys" "$work/payload" "$work/pkgs"
  head -c 1024 /dev/urandom > "$work/payload/data.bin"
  "$build/bin/upk" keygen "$work/keys/root.key" > /dev/null
  "$build/bin/upk" keygen "$work/keys/targets.key" > /dev/null
  "$build/bin/upk" pack --name base --version 1.1.0 --kind base --upgrades-from 1.0.0 \
    --key "$work/keys/targets.key" --dir "$work/payload" -o "$work/pkgs/base-1.1.0.upk" > /dev/null
  "$build/bin/upk" pack --name site --version 5.1.0 --kind software --upgrades-from 5.0.0 --requires 'base>=1.1.0' \
    --key "$work/keys/targets.key" --dir "$work/payload" -o "$work/pkgs/site-5.1.0.upk" > /dev/null
  if "$build/bin/upk" repo bootstrap --server "$server" --token-file "$work/admin.token" \
       --root-key "$work/keys/root.key" --targets-key "$work/keys/targets.key" > "$work/publish.log" 2>&1 &&
     "$build/bin/upk" publish "$work/pkgs/base-1.1.0.upk" --server "$server" --token-file "$work/publisher.token" \
       --targets-key "$work/keys/targets.key" --channel stable >> "$work/publish.log" 2>&1 &&
     "$build/bin/upk" publish "$work/pkgs/site-5.1.0.upk" --server "$server" --token-file "$work/publisher.token" \
       --targets-key "$work/keys/targets.key" --channel stable >> "$work/publish.log" 2>&1; then
    published="base 1.1.0 and site 5.1.0 in stable"
    sleep 1.5  # the updater reloads its catalog at most once a second
  else
    echo "publishing failed (benchmark goes on with what was published):" >&2; tail -3 "$work/publish.log" >&2
    published="failed: $(tail -1 "$work/publish.log")"
  fi
fi
echo "catalog: $published"

echo "== enrolment through the updater: a new licence, a fresh identity, fleet-sim enrol, first check-in"
curl -sf -X POST -H "Authorization: Bearer $(cat "$work/ks/admin.token")" -H 'Content-Type: application/json' \
  -d '{"customer": "bench", "maintenance_end": "2036-01-01T00:00:00Z", "features": []}' \
  "http://127.0.0.1:$kport/api/v1/licences" | python3 -c 'import json,sys; print(json.load(sys.stdin)["licence_key"])' \
  > "$work/licence.txt"
"$fs" identity new "$work/fresh.json" > /dev/null
"$fs" enrol --server "$server" --identity "$work/fresh.json" --licence-key-file "$work/licence.txt" | head -c 300; echo
"$fs" checkin --server "$server" --identity "$work/fresh.json" "${installed[@]}" --director-key "$work/director.pub" | head -2

echo "== one check-in by hand (appliance 0), assignment verified with the director key"
"$fs" identity new "$work/id0.json" --fleet-index 0 > /dev/null
"$fs" checkin --server "$server" --identity "$work/id0.json" "${installed[@]}" --director-key "$work/director.pub" || {
  echo "check-in of appliance 0 failed; updater log:" >&2; tail -5 "$work/up.log" >&2; exit 1; }
mem_start=$(mem "$upid")

echo "== (a) cold pass: $active appliances check in once (fleet-sim load --max, $cold_conns connections)"
"$fs" --json load --server "$server" --appliances "$active" --max --requests "$active" --duration 3600 \
  --connections "$cold_conns" "${installed[@]}" --fail-over-permille 10 > "$work/cold.json" || {
  echo "cold pass failed:" >&2; cat "$work/cold.json" >&2; tail -5 "$work/up.log" >&2; exit 1; }
cold_rate=$(json_field "$work/cold.json" achieved_rate)
cold_p99=$(json_field "$work/cold.json" latency_ms/p99)
echo "cold: $(printf '%.0f' "$cold_rate") check-ins/s, p99 $cold_p99 ms, statuses $(json_field "$work/cold.json" statuses)"
mem_warm=$(mem "$upid")

# wrk's summary: requests/s, non-2xx count, p99.
wrk_rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
wrk_non2xx() { awk '/Non-2xx or 3xx responses/ {print $5} END {}' "$1" | tail -1; }
wrk_total() { awk '/requests in/ {print $1}' "$1"; }
wrk_p99() { awk '$1 == "99%" {print $2}' "$1"; }

echo "warm-up nginx..."
wrk -t"$wrk_threads" -c"$conns" -d2s "$nginx/small" > /dev/null
n_rps=(); u_rps=(); n_p99=(); u_p99=(); exhausted=no
for i in $(seq "$runs"); do
  wrk -t"$wrk_threads" -c"$conns" -d10s --latency "$nginx/small" > "$work/wrk-n.out"
  n_rps+=("$(wrk_rps "$work/wrk-n.out")"); n_p99+=("$(wrk_p99 "$work/wrk-n.out")")
  # Presigned right before the run: the server accepts timestamps within 300 s of its clock.
  "$fs" presign --count-appliances "$active" --requests "$requests" --server-host "127.0.0.1:$uport" \
    "${installed[@]}" --out "$work/presigned.txt" > /dev/null
  PRESIGNED=$work/presigned.txt WRK_THREADS=$wrk_threads \
    wrk -t"$wrk_threads" -c"$conns" -d"$duration" --timeout 10s --latency -s "$here/replay.lua" "$server" > "$work/wrk-u.out"
  total=$(wrk_total "$work/wrk-u.out"); bad=$(wrk_non2xx "$work/wrk-u.out"); bad=${bad:-0}
  if ((bad * 100 > total)); then
    echo "run $i: $bad of $total check-ins were not 2xx (> 1 %): failing" >&2; cat "$work/wrk-u.out" >&2
    tail -5 "$work/up.log" >&2; exit 1
  fi
  # wrk divides by the whole -d duration even when replay.lua stopped its threads early, so a run
  # that used up its presigned requests only gives a lower bound: say so, and raise REQUESTS.
  # (A stopping thread drops the answers still in flight on its connections, hence the margin.)
  if ((total + 2 * conns >= requests)); then
    echo "run $i: all $requests presigned check-ins were used before ${duration}: the rate is a lower bound; raise REQUESTS" >&2
    exhausted=yes
  fi
  u_rps+=("$(wrk_rps "$work/wrk-u.out")"); u_p99+=("$(wrk_p99 "$work/wrk-u.out")")
  echo "run $i: nginx ${n_rps[-1]} req/s (p99 ${n_p99[-1]}), updater check-in ${u_rps[-1]} req/s (p99 ${u_p99[-1]}; $total answers, $bad not 2xx)"
done
rm -f "$work/presigned.txt"
mem_after_a=$(mem "$upid")
# For comparison: closed loop with signing on the fly in fleet-sim (client CPU on the same 2 cores).
"$fs" --json load --server "$server" --appliances "$active" --max --duration 10 --connections "$conns" \
  "${installed[@]}" > "$work/max.json" || true
max_line="$(printf '%.0f' "$(json_field "$work/max.json" achieved_rate)") req/s, p99 $(json_field "$work/max.json" latency_ms/p99) ms, statuses $(json_field "$work/max.json" statuses)"
echo "fleet-sim load --max (-c$conns): $max_line"

dl_line="skipped"
if [ "${SKIP_DOWNLOAD:-0}" != 1 ]; then
  echo "== (b) ${size_mib} MiB blob download"
  head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/www/big"; chmod 644 "$work/www/big"
  hex=$(sha256sum "$work/www/big" | cut -d' ' -f1)
  token=$(cat "$work/publisher.token")
  code=$(curl -s -o "$work/put.out" -w '%{http_code}' -X PUT -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/octet-stream' -T "$work/www/big" "$server/api/v1/blobs/sha256/$hex")  # -T streams
  blob_url="$server/api/v1/blobs/sha256/$hex"
  if [ "$code" != 201 ] && [ "$code" != 200 ]; then
    echo "blob upload answered $code: $(head -c 300 "$work/put.out"); downloads skipped" >&2
    dl_line="blob upload answered $code"
  else
    cat "$work/www/big" > /dev/null  # both from the page cache
    got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "$blob_url")
    [ "$got" = "200 $((size_mib * 1024 * 1024))" ] || { echo "blob GET: $got" >&2; exit 1; }
    n_dl=(); u_dl=()
    for i in $(seq "$runs"); do
      n_dl+=("$(curl -s -o /dev/null -w '%{speed_download}' "$nginx/big")")
      u_dl+=("$(curl -s -o /dev/null -w '%{speed_download}' "$blob_url")")
      echo "run $i: nginx $(awk -v b="${n_dl[-1]}" 'BEGIN {printf "%.0f", b/1048576}') MiB/s, updater $(awk -v b="${u_dl[-1]}" 'BEGIN {printf "%.0f", b/1048576}') MiB/s"
    done
    nd=$(median "${n_dl[@]}"); ud=$(median "${u_dl[@]}")
    dl_line=$(printf '%.0f MiB/s vs nginx %.0f MiB/s: %sx' "$(awk -v b="$ud" 'BEGIN {print b/1048576}')" \
      "$(awk -v b="$nd" 'BEGIN {print b/1048576}')" "$(ratio "$ud" "$nd")")
  fi
  rm -f "$work/www/big"
fi

rate_line="skipped"
if [ "${SKIP_RATE:-0}" != 1 ]; then
  echo "== (c) open loop at $rate check-ins/s for $rate_duration s over $active appliances"
  mem_before_c=$(mem "$upid")
  "$fs" --json load --server "$server" --appliances "$active" --rate "$rate" --duration "$rate_duration" \
    --connections 32 "${installed[@]}" > "$work/rate.json" || true
  mem_after_c=$(mem "$upid")
  "$fs" --json load --server "$nginx" --reference-get /small --rate "$rate" --duration "$rate_duration" \
    --connections 32 > "$work/rate-nginx.json" || true
  rate_line="updater achieved $(printf '%.1f' "$(json_field "$work/rate.json" achieved_rate)")/s, statuses $(json_field "$work/rate.json" statuses), p50 $(json_field "$work/rate.json" latency_ms/p50) ms, p90 $(json_field "$work/rate.json" latency_ms/p90) ms, p99 $(json_field "$work/rate.json" latency_ms/p99) ms, p99.9 $(json_field "$work/rate.json" 'latency_ms/p99.9') ms, max $(json_field "$work/rate.json" latency_ms/max) ms; nginx p50 $(json_field "$work/rate-nginx.json" latency_ms/p50) ms, p99 $(json_field "$work/rate-nginx.json" latency_ms/p99) ms, p99.9 $(json_field "$work/rate-nginx.json" 'latency_ms/p99.9') ms, max $(json_field "$work/rate-nginx.json" latency_ms/max) ms"
  echo "$rate_line"
  echo "updater memory before: $mem_before_c"
  echo "updater memory after:  $mem_after_c"
fi

nm=$(median "${n_rps[@]}"); um=$(median "${u_rps[@]}")
echo
echo "catalog: $published"
echo "== summary ($appliances seeded, $active active; medians of $runs alternating runs; wrk -t$wrk_threads -c$conns; updater --threads $threads)"
printf '%-44s %12s %12s %8s\n' "" nginx updater ratio
printf '%-44s %12.0f %12.0f %7sx\n' "1 KiB static vs warm check-in (req/s)" "$nm" "$um" "$(ratio "$um" "$nm")"
printf '%-44s %12s %12.0f\n' "cold check-in, first of each appliance (req/s)" "" "$cold_rate"
echo "warm check-in with fleet-sim load --max (signing on the fly): $max_line"
[ "$exhausted" = no ] || echo "NOTE: some runs used up their presigned requests: the check-in rate is a lower bound"
echo "download: $dl_line"
echo "open loop: $rate_line"
echo "updater memory: start $mem_start"
echo "                after cold pass $mem_warm"
echo "                after (a) $mem_after_a"
echo "                end $(mem "$upid")"
