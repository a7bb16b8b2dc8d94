#!/usr/bin/env bash
# Relay benchmarks (b) and (c) of issue 6, each side by side with socat in the same run.
#
# usage: bench/relay/run.sh [BUILD_DIR]    (builds nothing: ninja -C BUILD_DIR bench_relay relay)
# env:   RUNS=3 MIB=1024 (per throughput measurement, split over the streams) PROBES=2000
#        INTERVAL_US=5000 (between 1 KiB probes) BG=2 (background sessions) LOAD=0.7
#        RELAY=BUILD_DIR/bin/relay  CIPHERS= (TLS 1.3 suites forced on every leg, e.g.
#        TLS_AES_128_GCM_SHA256; our endpoints are one side of every leg, so this binds socat too)
#        PIN=1: the middle (the relay, or socat with every child it forks) on CPU 1 and bench_relay
#        on CPU 0 (taskset), so the endpoints' crypto does not compete with the middle's
#        LOAD_MIBPS=R: background load fixed at R MiB/s instead of LOAD x the relay's max (to
#        compare two relay builds under the same load)
#        PROBE_RT=1: the probe's two threads (writer and echo) run SCHED_FIFO on the endpoints'
#        CPU, ahead of the background load's threads there, so the endpoints' own scheduling adds
#        nothing to what the middle adds (the same for relay, socat and direct)
#        SYSCALLS=1: first count the middle's system calls (strace -c -f) for 64 MiB, 1 stream
#
# (b) throughput: bench_relay streams MIB through our relay (console -> relay -> client, DATA
#     frames) and through socat-tls-relay.sh (TLS in, TLS out) into its own TLS server, with 1
#     and 4 parallel sessions; relay and socat alternate (the first one alternates per round).
# (c) latency: 1 KiB written, echoed by the far end, timed at the writer; BG background sessions
#     carry LOAD x our relay's max throughput of the same round; the same load for socat and for
#     the direct baseline (our TLS client straight to our TLS server, no middle).
# Prints every measurement, then medians and ratios. Every child is stopped on exit.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
runs=${RUNS:-3}; mib=${MIB:-1024}; probes=${PROBES:-2000}; interval=${INTERVAL_US:-5000}
bg=${BG:-2}; load=${LOAD:-0.7}; ciphers=${CIPHERS:-}; pin=${PIN:-0}; probe_rt=${PROBE_RT:-0}
bench=$build/bin/bench_relay
relay=${RELAY:-$build/bin/relay}
for b in "$bench" "$relay"; do
  [ -x "$b" ] || { echo "missing $b: ninja -C $build bench_relay relay" >&2; exit 2; }
done
for tool in socat openssl python3; do
  command -v "$tool" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y "$tool" >/dev/null
done

work=$(mktemp -d /tmp/upkeep-bench-relay.XXXXXX)
pids=(); extra_dirs=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do timeout 5 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work" "${extra_dirs[@]}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" >/dev/null 2>&1
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
{
  echo '{"clients": ['
  for i in $(seq 0 15); do
    [ "$i" -gt 0 ] && echo ','
    printf '{"id": "c-%d", "secret_hash": "%s", "version": "1.0.0", "platform": "linux-x86_64", "mode": "active", "last_checkin": "2030-01-01T00:00:00Z"}\n' \
      "$i" "$(printf '%s\n' "$secret" | "$relay" hash-secret)"
  done
  printf '], "technicians": [{"id": "bench", "token_hash": "%s"}]}\n' "$(printf '%s\n' "$token" | "$relay" hash-secret)"
} > "$work/clients.json"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Our relay, bounded by timeout; the relay itself is timeout's child.
timeout 3600 "$relay" serve --cert "$work/cert.pem" --key "$work/key.pem" --clients "$work/clients.json" \
  --listen 127.0.0.1:0 > "$work/relay.log" 2>&1 &
pids+=("$!")
rport=""
for _ in $(seq 100); do
  rport=$(sed -n 's/^relay: listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$work/relay.log")
  [ -n "$rport" ] && break
  sleep 0.1
done
[ -n "$rport" ] || { echo "relay did not start:" >&2; cat "$work/relay.log" >&2; exit 1; }
relay_pid=$(pgrep -P "${pids[0]}" -x relay)

# socat: TLS in on sport, TLS out to tport where bench_relay's own TLS server listens.
sport=$(free_port); tport=$(free_port); dport=$(free_port)
/work/shared/bench/socat-tls-relay.sh "$sport" "$tport" --ttl 3600 > "$work/socat.out" 2>&1
socat_tpid=$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' "$work/socat.out")
pids+=("$socat_tpid")
socat_pid=""
for _ in $(seq 50); do socat_pid=$(pgrep -P "$socat_tpid" -x socat || true); [ -n "$socat_pid" ] && break; sleep 0.1; done
[ -n "$socat_pid" ] || { echo "socat did not start" >&2; cat "$work/socat.out" >&2; exit 1; }
# The script's certificate directory (its cert= argument) is ours to remove.
extra_dirs+=("$(tr '\0' '\n' < "/proc/$socat_pid/cmdline" | sed -n 's/.*cert=\([^,]*\)\/cert.pem.*/\1/p' | head -1)")
for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$sport") 2>/dev/null && break; sleep 0.1; done

bench_pin=()
if [ "$pin" = 1 ]; then
  command -v taskset >/dev/null || { echo "PIN=1 needs taskset (util-linux)" >&2; exit 2; }
  # socat forks a child per connection after this: the children inherit the affinity.
  taskset -a -cp 1 "$relay_pid" > /dev/null
  taskset -a -cp 1 "$socat_pid" > /dev/null
  bench_pin=(taskset -c 0)
fi

common=(--cert "$work/cert.pem" --key "$work/key.pem")
[ -n "$ciphers" ] && common+=(--ciphersuites "$ciphers")
b_relay=(--mode relay --port "$rport" --secret "$secret" --token "$token" --middle-pid "$relay_pid")
b_socat=(--mode socat --port "$sport" --listen "$tport" --middle-pid "$socat_pid")
b_direct=(--mode direct --port "$dport" --listen "$dport")

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< "$2"; }
run_bench() { timeout 300 "${bench_pin[@]}" "$bench" "$@" "${common[@]}"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

declare -A R  # R[key] = space-separated values over the runs
add() { R[$1]="${R[$1]:-} $2"; }

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); pinned: $([ "$pin" = 1 ] && echo "middle on CPU 1, bench_relay on CPU 0" || echo no)"
run_bench "${b_relay[@]}" --test throughput --streams 1 --mib 128 > /dev/null  # warm-up
if [ "${SYSCALLS:-0}" = 1 ]; then
  command -v strace >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y strace >/dev/null
  for who in relay socat; do
    if [ "$who" = relay ]; then args=("${b_relay[@]}"); p=$relay_pid; else args=("${b_socat[@]}"); p=$socat_pid; fi
    strace -c -f -p "$p" -o "$work/strace.$who" & st=$!
    sleep 0.5
    run_bench "${args[@]}" --test throughput --streams 1 --mib 64 > /dev/null
    sleep 0.3; kill -INT "$st"; wait "$st" 2>/dev/null || true
    echo "system calls of the $who for 64 MiB, 1 stream (strace -c -f; calls over 100):"
    awk '$4 ~ /^[0-9]+$/ && $4 > 100 && $NF != "total" {print "  " $NF ": " $4 (NF == 6 ? " (" $5 " errors)" : "")}' "$work/strace.$who"
  done
fi
run_bench "${b_socat[@]}" --test throughput --streams 1 --mib 128 > /dev/null
for i in $(seq "$runs"); do
  order=(relay socat); [ $((i % 2)) -eq 0 ] && order=(socat relay)
  best=0
  for streams in 1 4; do
    for who in "${order[@]}"; do
      if [ "$who" = relay ]; then args=("${b_relay[@]}"); else args=("${b_socat[@]}"); fi
      out=$(run_bench "${args[@]}" --test throughput --streams "$streams" --mib $((mib / streams)))
      echo "run $i: $out"
      add "$who.$streams.mibps" "$(field mibps "$out")"
      add "$who.$streams.eff" "$(field mib_per_cpu_s "$out")"
      add "cipher.$who" "$(field cipher_send "$out"),$(field cipher_recv "$out")"
      [ "$who" = relay ] && best=$(awk -v a="$best" -v b="$(field mibps "$out")" 'BEGIN {print (b > a) ? b : a}')
    done
  done
  target=$(awk -v b="$best" -v l="$load" 'BEGIN {printf "%.1f", b * l}')
  [ -n "${LOAD_MIBPS:-}" ] && target=$LOAD_MIBPS
  for who in relay socat direct; do
    case $who in relay) args=("${b_relay[@]}") ;; socat) args=("${b_socat[@]}") ;; direct) args=("${b_direct[@]}") ;; esac
    out=$(run_bench "${args[@]}" --test latency --bg "$bg" --load-mibps "$target" --probes "$probes" --interval-us "$interval" \
      --probe-rt "$probe_rt")
    echo "run $i: $out"
    for k in load_mibps p50_us p99_us p999_us max_us over40ms; do add "$who.lat.$k" "$(field "$k" "$out")"; done
  done
  echo "run $i: load average $(cut -d' ' -f1-3 /proc/loadavg)"
done

m() { median ${R[$1]}; }
total() { printf '%s\n' ${R[$1]} | awk '{t += $1} END {print t}'; }
worst() { printf '%s\n' ${R[$1]} | sort -g | tail -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }
echo
first() { echo "$1"; }
echo "medians of $runs alternating runs; TLS (sender leg,receiver leg): relay $(first ${R[cipher.relay]}), socat $(first ${R[cipher.socat]})"
printf '%-34s %10s %10s %8s\n' "throughput (MiB/s, wall)" relay socat ratio
for s in 1 4; do
  printf '%-34s %10.0f %10.0f %8s\n' "$s stream(s), ${mib} MiB in all" "$(m relay.$s.mibps)" "$(m socat.$s.mibps)" \
    "$(ratio "$(m relay.$s.mibps)" "$(m socat.$s.mibps)")"
  printf '%-34s %10.0f %10.0f %8s\n' "  MiB per CPU-second of the middle" "$(m relay.$s.eff)" "$(m socat.$s.eff)" \
    "$(ratio "$(m relay.$s.eff)" "$(m socat.$s.eff)")"
done
echo
echo "1 KiB echo round trips (us), $probes probes ${interval} us apart, $bg background sessions at ${load} x relay max"
echo "(medians over the runs; max: the worst of all runs; >40ms: the total over all runs)"
printf '%-8s %10s %8s %8s %8s %8s %8s\n' "" "load MiB/s" p50 p99 p99.9 max ">40ms"
for who in relay socat direct; do
  printf '%-8s %10.0f %8.0f %8.0f %8.0f %8.0f %8.0f\n' "$who" "$(m $who.lat.load_mibps)" "$(m $who.lat.p50_us)" \
    "$(m $who.lat.p99_us)" "$(m $who.lat.p999_us)" "$(worst $who.lat.max_us)" "$(total $who.lat.over40ms)"
done
echo "relay added (median p50 / p99 minus direct): $(awk -v a="$(m relay.lat.p50_us)" -v b="$(m direct.lat.p50_us)" 'BEGIN {print a-b}') us /" \
  "$(awk -v a="$(m relay.lat.p99_us)" -v b="$(m direct.lat.p99_us)" 'BEGIN {print a-b}') us"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
