#!/usr/bin/env bash
# HTTP benchmark of upkeep_net against nginx on the same machine, in the same run.
#
# usage: bench/http/run.sh [BUILD_DIR]     (build first: ninja -C BUILD_DIR bench_http_server)
# env:   RUNS=3 DURATION=10s CONNECTIONS=64 SIZE_MIB=1024 THREADS=1 (our I/O threads; nginx has 1 worker)
#
# 1 KiB responses: wrk -t2 -c64 against nginx serving a 1 KiB file, our server answering /small
# (the same 1 KiB from a handler) and /checkin (a handler that parses JSON and answers 1 KiB JSON).
# Download: curl of the same 1 GiB file from nginx (sendfile on) and from our file-body path.
# Runs alternate between the servers; medians are compared. Prints ratios ours/nginx.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
runs=${RUNS:-3}; duration=${DURATION:-10s}; conns=${CONNECTIONS:-64}; size_mib=${SIZE_MIB:-1024}
threads=${THREADS:-1}
here=$(cd "$(dirname "$0")" && pwd)
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
server_bin=$build/bin/bench_http_server
[ -x "$server_bin" ] || { echo "missing $server_bin: ninja -C $build bench_http_server" >&2; exit 2; }

work=$(mktemp -d /tmp/upkeep-bench-http.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

head -c 1024 /dev/urandom > "$work/small"
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/big"
cat "$work/big" > /dev/null  # both servers read it from the page cache
chmod 755 "$work"; chmod 644 "$work/small" "$work/big"  # nginx's worker runs as nobody

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nport=$(free_port); uport=$(free_port)
# To a file, not $(...): nginx inherits the script's stdout and would hold the pipe open.
/work/shared/bench/nginx-static.sh "$work" "$nport" --ttl 1800 > "$work/nginx.out" 2>&1
pids+=("$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' "$work/nginx.out")")
"$server_bin" "$uport" "$work" "$threads" > "$work/server.log" 2>&1 &
upid=$!
pids+=("$upid")
for _ in $(seq 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$nport/small" && curl -sf -o /dev/null "http://127.0.0.1:$uport/small" && break
  sleep 0.1
done
# Both must really serve the content (a 403 or 404 is fast too).
check() { [ "$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "$1")" = "200 $2" ] || { echo "bad answer from $1" >&2; exit 1; }; }
check "http://127.0.0.1:$nport/small" 1024
check "http://127.0.0.1:$uport/small" 1024
check "http://127.0.0.1:$nport/big" $((size_mib * 1024 * 1024))
check "http://127.0.0.1:$uport/files/big" $((size_mib * 1024 * 1024))
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$uport/checkin?id=a-1")" = 200 ] || exit 1

rps() { wrk -t2 -c"$conns" -d"$duration" --latency "$1" > "$work/wrk.out"; awk '/Requests\/sec/ {print $2}' "$work/wrk.out"; }
p99() { awk '$1 == "99%" {print $2}' "$work/wrk.out"; }
speed() { curl -s -o /dev/null -w '%{speed_download}' "$1"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "warm-up..."
wrk -t2 -c"$conns" -d2s "http://127.0.0.1:$nport/small" >/dev/null
wrk -t2 -c"$conns" -d2s "http://127.0.0.1:$uport/small" >/dev/null

n_rps=(); u_rps=(); c_rps=(); n_p99=(); u_p99=(); c_p99=()
for i in $(seq "$runs"); do
  n_rps+=("$(rps "http://127.0.0.1:$nport/small")"); n_p99+=("$(p99)")
  u_rps+=("$(rps "http://127.0.0.1:$uport/small")"); u_p99+=("$(p99)")
  c_rps+=("$(rps "http://127.0.0.1:$uport/checkin?id=a-1")"); c_p99+=("$(p99)")
  echo "run $i: nginx ${n_rps[-1]} req/s (p99 ${n_p99[-1]}), upkeep /small ${u_rps[-1]} (p99 ${u_p99[-1]}), /checkin ${c_rps[-1]} (p99 ${c_p99[-1]})"
done

n_dl=(); u_dl=()
for i in $(seq "$runs"); do
  n_dl+=("$(speed "http://127.0.0.1:$nport/big")")
  u_dl+=("$(speed "http://127.0.0.1:$uport/files/big")")
  echo "run $i: download nginx $(awk -v b="${n_dl[-1]}" 'BEGIN {printf "%.0f", b/1048576}') MiB/s, upkeep $(awk -v b="${u_dl[-1]}" 'BEGIN {printf "%.0f", b/1048576}') MiB/s"
done
hwm=$(awk '/VmHWM/ {print $2 " " $3}' "/proc/$upid/status")

nm=$(median "${n_rps[@]}"); um=$(median "${u_rps[@]}"); cm=$(median "${c_rps[@]}")
nd=$(median "${n_dl[@]}"); ud=$(median "${u_dl[@]}")
echo
echo "medians of $runs alternating runs (wrk -t2 -c$conns -d$duration; curl of ${size_mib} MiB; our I/O threads: $threads)"
printf '%-34s %14s %14s %8s\n' "" nginx upkeep ratio
printf '%-34s %14.0f %14.0f %7.2fx\n' "1 KiB static (req/s)" "$nm" "$um" "$(awk -v a="$um" -v b="$nm" 'BEGIN {print a/b}')"
printf '%-34s %14.0f %14.0f %7.2fx\n' "1 KiB check-in handler (req/s)" "$nm" "$cm" "$(awk -v a="$cm" -v b="$nm" 'BEGIN {print a/b}')"
printf '%-34s %14.0f %14.0f %7.2fx\n' "${size_mib} MiB download (MiB/s)" "$(awk -v b="$nd" 'BEGIN {print b/1048576}')" \
  "$(awk -v b="$ud" 'BEGIN {print b/1048576}')" "$(awk -v a="$ud" -v b="$nd" 'BEGIN {print a/b}')"
echo "p99 latency at full load is in the per-run lines; bench_http_server peak RSS: $hwm"
