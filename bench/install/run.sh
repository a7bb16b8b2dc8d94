#!/usr/bin/env bash
# Issue 4 goal: verify + decrypt + install of a 1 GiB `files` package takes at most 1.5x the time
# of `tar -xf` of the same payload unencrypted, same run.
#
# Ours is one streaming pass (bench_install: OpenEncryptedPackage -> VerifySignatures ->
# ExtractFromReader): it reads the encrypted blob, SHA-256s it, decrypts it, checks every entry's
# size and SHA-256 against the signed manifest and writes the files; no plaintext copy on disk.
# Two fair pairings, alternated run by run, page cache warm for both inputs:
#   production: ours (fsync every file, the default) vs `tar -xf payload.tar && sync`
#   no-sync:    ours with --no-fsync              vs plain `tar -xf payload.tar`
# Outputs are deleted (and synced away) between runs, outside the timings. Our peak RSS comes
# from /usr/bin/time -v on every run of ours: it must not grow with the payload.
#
# Usage: bench/install/run.sh [BUILD_DIR]   (default: build; needs BUILD_DIR/bin/upk and bench_install)
#   RUNS=3 (runs of each, alternating; medians are compared)  SIZE_MIB=1024  TMPDIR_BASE=/var/tmp
# Exits 1 when the production ratio is above 1.5.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
upk=$build/bin/upk
drv=$build/bin/bench_install
runs=${RUNS:-3}
size_mib=${SIZE_MIB:-1024}
base=${TMPDIR_BASE:-/var/tmp}
[[ -x "$upk" ]] || { echo "no $upk: build it first (ninja -C $build upk)" >&2; exit 2; }
[[ -x "$drv" ]] || { echo "no $drv: build it first (ninja -C $build bench_install)" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time not found (apt-get install time)" >&2; exit 2; }
if [[ $(stat -f -c %T "$base") == tmpfs ]]; then
  echo "$base is tmpfs: extraction would not touch a disk; set TMPDIR_BASE to a disk-backed directory" >&2
  exit 2
fi

work=$(mktemp -d "$base/upk-bench-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ~1,000 files of ~1 MiB random data (SIZE_MIB in total) + 300 small files in 10 directories.
nbig=$((size_mib * 1000 / 1024))
((nbig > 0)) || nbig=1
echo "== making a ${size_mib} MiB payload ($nbig large files + 300 small ones) in $work"
mkdir -p "$work/payload/big"
head -c "$((size_mib << 20))" /dev/urandom | split -b "$(((size_mib << 20) / nbig))" -a 4 -d - "$work/payload/big/f"
for ((d = 0; d < 10; d++)); do
  mkdir -p "$work/payload/small/d$d"
  for ((i = 0; i < 30; i++)); do
    head -c "$((512 + (d * 30 + i) * 37))" /dev/urandom >"$work/payload/small/d$d/s$i.txt"
  done
done
"$upk" -q keygen "$work/key" >/dev/null
"$upk" -q pack --name bench --version 1.0.0 --kind software --key "$work/key" \
  --dir "$work/payload" -o "$work/bench.upk" >/dev/null
read -r sha len < <("$drv" --encrypt "$work/bench.upk" "$work/bench.blob" "$work/content.key")
tar -cf "$work/payload.tar" -C "$work/payload" .
rm -rf "$work/payload" "$work/bench.upk"
ls -l "$work/bench.blob" "$work/payload.tar"

now_ns() { date +%s%N; }
time_ns() {  # runs "$@" with output discarded, prints wall-clock nanoseconds
  local start end
  start=$(now_ns)
  "$@" >/dev/null 2>"$work/last.err" || { echo "failed: $*" >&2; cat "$work/last.err" >&2; exit 1; }
  end=$(now_ns)
  echo $((end - start))
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2] + a[NR/2+1]) / 2)}'; }
clean() { rm -rf "$work/out1" "$work/out2"; sync; }
tar_x() { mkdir "$work/out1" && tar -xf "$work/payload.tar" -C "$work/out1"; }
tar_x_sync() { tar_x && sync; }
ours() {  # extra args: [--no-fsync]; peak RSS (KiB) appended to $work/rss
  /usr/bin/time -v -o "$work/time.txt" "$drv" "$work/bench.blob" "$work/content.key" "$sha" "$len" \
    "$work/key.pub" "$work/out2" "$@"
  awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/time.txt" >>"$work/rss"
}

# Warm the page cache with both inputs, and check ours works before timing anything.
cat "$work/bench.blob" "$work/payload.tar" >/dev/null
ours --no-fsync >/dev/null
clean
: >"$work/rss"

declare -A t
for mode in production no-sync; do
  for ((i = 1; i <= runs; i++)); do
    if [[ $mode == production ]]; then
      a=$(time_ns tar_x_sync); clean
      b=$(time_ns ours); clean
    else
      a=$(time_ns tar_x); clean
      b=$(time_ns ours --no-fsync); clean
    fi
    t[$mode.tar]+="$a "
    t[$mode.ours]+="$b "
    awk -v m="$mode" -v i="$i" -v a="$a" -v b="$b" \
      'BEGIN {printf "%-10s run %d: tar %7.3f s   ours %7.3f s\n", m, i, a / 1e9, b / 1e9}'
  done
done

fail=0
for mode in production no-sync; do
  tm=$(printf '%s\n' ${t[$mode.tar]} | median)
  om=$(printf '%s\n' ${t[$mode.ours]} | median)
  ratio=$(awk -v a="$tm" -v b="$om" 'BEGIN {printf "%.3f", b / a}')
  label="tar -xf"
  [[ $mode == production ]] && label="tar -xf && sync"
  awk -v m="$mode" -v n="$runs" -v l="$label" -v a="$tm" -v b="$om" -v r="$ratio" \
    'BEGIN {printf "%-10s median of %d: %s %.3f s, ours %.3f s, ratio %s (goal <= 1.5)\n", m, n, l, a / 1e9, b / 1e9, r}'
  if [[ $mode == production ]] && awk -v r="$ratio" 'BEGIN {exit !(r > 1.5)}'; then fail=1; fi
done
echo "ours: peak RSS $(sort -n "$work/rss" | tail -1) KiB (max over all runs; payload ${size_mib} MiB)"
if ((fail)); then
  echo "FAIL: ours is more than 1.5x tar -xf && sync" >&2
  exit 1
fi
echo "OK"
