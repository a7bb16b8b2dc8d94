# Shared shell side of the browser tests (sourced; expects $here = tests/browser):
#
#   browser_preflight                 exit 77 (skip) when node_modules/playwright-core or the
#                                     browser is missing; exit 1 when node is missing
#   browser_run TEST.mjs URL BUILD    runs one test file with node, niced, in its own process
#                                     group, bounded by BROWSER_TEST_SECONDS (default 180);
#                                     returns its exit status
#   browser_stop                      kills that process group (node and every chromium process
#                                     it started) if anything of it is still alive
#
# UPKEEP_CHROMIUM overrides /usr/bin/chromium; the UPKEEP_BROWSER_* variables of lib/harness.mjs
# pass through (headed runs, traces).

browser_pgid=""

browser_preflight() {
  if [[ ! -d "$here/node_modules/playwright-core" ]]; then
    echo "SKIP: $here/node_modules/playwright-core is missing; run 'cd tests/browser && npm ci' (tools/test does)"
    exit 77
  fi
  if [[ ! -x "${UPKEEP_CHROMIUM:-/usr/bin/chromium}" ]]; then
    echo "SKIP: ${UPKEEP_CHROMIUM:-/usr/bin/chromium} is missing; install Debian's chromium (tools/deps does)"
    exit 77
  fi
  command -v node >/dev/null || { echo "FAIL: node is not installed"; exit 1; }
  command -v setsid >/dev/null || { echo "FAIL: setsid (util-linux) is not installed"; exit 1; }
}

browser_run() {
  local test=$1 url=$2 build=$3 limit=${BROWSER_TEST_SECONDS:-180} rc=0
  local inner=$((limit > 60 ? limit - 30 : limit * 2 / 3 + 1))
  # setsid: node and its chromium processes form one process group that browser_stop can end
  # whatever state they are in. The harness has its own, shorter, watchdog.
  UPKEEP_BASE_URL=$url UPKEEP_BUILD_DIR=$build UPKEEP_BROWSER_TIMEOUT=${UPKEEP_BROWSER_TIMEOUT:-$inner} \
    setsid nice -n 19 node "$test" &
  browser_pgid=$!
  local waited=0
  while kill -0 "$browser_pgid" 2>/dev/null; do
    if ((waited >= limit * 10)); then
      echo "browser test: still running after ${limit} s; killing it"
      browser_stop
      return 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  wait "$browser_pgid" || rc=$?
  browser_stop
  return "$rc"
}

browser_stop() {
  [[ -n "$browser_pgid" ]] || return 0
  if kill -0 -- "-$browser_pgid" 2>/dev/null; then
    kill -TERM -- "-$browser_pgid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 -- "-$browser_pgid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$browser_pgid" 2>/dev/null || true
  fi
  browser_pgid=""
}
