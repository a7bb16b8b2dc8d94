#!/usr/bin/env bash
# upk verify vs openssl dgst -sha256 on the same 1 GiB package, page cache warm for both.
# Goal: upk verify (signature + every payload digest and size) takes at most 1.15x the time of
# a bare SHA-256 of the file.
#
# Usage: bench/verify/run.sh [BUILD_DIR]   (default: build; needs BUILD_DIR/bin/upk)
#   RUNS=5 (runs of each, alternating; medians are compared)  SIZE_MIB=1024  TMPDIR_BASE=/var/tmp
# Exits 1 when the ratio is above 1.15.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
upk=$build/bin/upk
runs=${RUNS:-5}
size_mib=${SIZE_MIB:-1024}
[[ -x "$upk" ]] || { echo "no $upk: build it first (ninja -C $build upk)" >&2; exit 2; }
command -v openssl >/dev/null || { echo "openssl not found" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR_BASE:-/var/tmp}/upk-bench-verify.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== making a ${size_mib} MiB package in $work"
mkdir "$work/payload"
head -c "$((size_mib << 20))" /dev/urandom >"$work/payload/data.bin"
"$upk" -q keygen "$work/key" >/dev/null
"$upk" -q pack --name bench --version 1.0.0 --kind software --key "$work/key" \
  --dir "$work/payload" -o "$work/bench.upk" >/dev/null
rm -rf "$work/payload"
pkg=$work/bench.upk
ls -l "$pkg"

now_ns() { date +%s%N; }
time_ns() {  # runs "$@" with output discarded, prints wall-clock nanoseconds
  local start end
  start=$(now_ns)
  "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
  end=$(now_ns)
  echo $((end - start))
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2] + a[NR/2+1]) / 2)}'; }

# Warm the page cache so both read from memory.
cat "$pkg" >/dev/null
openssl dgst -sha256 "$pkg" >/dev/null
"$upk" -q verify --key "$work/key.pub" "$pkg" >/dev/null

ssl_times=() upk_times=()
for ((i = 1; i <= runs; i++)); do
  ssl_times+=("$(time_ns openssl dgst -sha256 "$pkg")")
  upk_times+=("$(time_ns "$upk" -q verify --key "$work/key.pub" "$pkg")")
  awk -v i="$i" -v s="${ssl_times[-1]}" -v u="${upk_times[-1]}" \
    'BEGIN {printf "run %d: openssl %6.3f s   upk verify %6.3f s\n", i, s / 1e9, u / 1e9}'
done
ssl=$(printf '%s\n' "${ssl_times[@]}" | median)
upkm=$(printf '%s\n' "${upk_times[@]}" | median)
ratio=$(awk -v s="$ssl" -v u="$upkm" 'BEGIN {printf "%.3f", u / s}')
awk -v n="$runs" -v s="$ssl" -v u="$upkm" -v r="$ratio" \
  'BEGIN {printf "median of %d: openssl dgst -sha256 %.3f s, upk verify %.3f s, ratio %s (goal <= 1.15)\n", n, s / 1e9, u / 1e9, r}'
if awk -v r="$ratio" 'BEGIN {exit !(r > 1.15)}'; then
  echo "FAIL: upk verify is more than 1.15x openssl" >&2
  exit 1
fi
echo "OK"
