# The Upkeep server stack on loopback, for the demo, the end-to-end tests and the benchmarks:
# a private PostgreSQL (tools/pg), the keyserver and the updater as real processes. Source it:
#
#   source tools/lib/stack.sh
#   stack_init DIR BIN_DIR          everything lives under DIR; binaries from BIN_DIR
#   trap stack_stop EXIT            (or call stack_stop from your own cleanup; stack_destroy also
#                                   deletes the database files: for throw-away directories)
#   stack_start_pg                  -> STACK_DB_KEYSERVER, STACK_DB_UPDATER (connection strings)
#   stack_start_keyserver           -> STACK_KS_URL, STACK_KS_ADMIN_TOKEN_FILE, DIR/director.pub
#   stack_licence CUSTOMER FILE     issue a licence (maintenance one year ahead), key into FILE
#   stack_start_updater             -> STACK_UP_URL, STACK_UP_PORT, DIR/tokens/{admin,publisher,support}
#
# Set STACK_FAST_KDF=1 to unlock the keyserver's keys with weak Argon2id parameters (tests only).
# Secrets (passphrase, tokens, licence keys) only ever live in 0600 files under DIR, never in argv.
# Every wait is bounded; a process that dies while starting fails the step with its log.

stack_init() {
  STACK_DIR=$1
  STACK_BIN=$2
  STACK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  STACK_PIDS=()
  mkdir -p "$STACK_DIR"
  chmod 700 "$STACK_DIR"
}

stack_die() { echo "stack: $*" >&2; exit 1; }

# stack_wait_listen NAME PID OUT_FILE -> prints the port from "NAME: listening on ADDR:PORT".
stack_wait_listen() {
  local name=$1 pid=$2 out=$3 port=""
  for _ in $(seq 1 300); do
    port=$(sed -n "s/^$name: listening on .*:\([0-9][0-9]*\)\$/\1/p" "$out" 2>/dev/null | head -n 1)
    [[ -n "$port" ]] && { echo "$port"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}

stack_start_pg() {
  local url
  url=$("$STACK_ROOT/tools/pg" start "$STACK_DIR/pg")
  STACK_PG_URL=$url
  for db in keyserver updater; do
    psql "$url" -v ON_ERROR_STOP=1 -qtAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
      psql "$url" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $db" >/dev/null
  done
  # tools/pg prints a URI (postgresql://user@host:port/DB?passfile=...): swap the database name.
  STACK_DB_KEYSERVER=$(sed 's#^\(postgresql://[^/]*/\)[^?]*#\1keyserver#' <<<"$url")
  STACK_DB_UPDATER=$(sed 's#^\(postgresql://[^/]*/\)[^?]*#\1updater#' <<<"$url")
}

stack_start_keyserver() {
  local ks=$STACK_DIR/keyserver fast=()
  [[ "${STACK_FAST_KDF:-0}" == 1 ]] && fast=(--fast-kdf-for-tests)
  if [[ ! -f "$ks/state.json" ]]; then
    umask 077
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STACK_DIR/keyserver.passphrase"
    umask 022
    "$STACK_BIN/keyserver" init --state "$ks" --passphrase-file "$STACK_DIR/keyserver.passphrase" "${fast[@]}" \
      >"$STACK_DIR/keyserver-keys.json" 2>"$STACK_DIR/keyserver-init.log" ||
      { cat "$STACK_DIR/keyserver-init.log" >&2; stack_die "keyserver init failed"; }
  fi
  "$STACK_BIN/keyserver" serve --state "$ks" --passphrase-file "$STACK_DIR/keyserver.passphrase" \
    --database "$STACK_DB_KEYSERVER" --listen 127.0.0.1:0 >"$STACK_DIR/keyserver.out" 2>"$STACK_DIR/keyserver.log" &
  STACK_KS_PID=$!
  STACK_PIDS+=("$STACK_KS_PID")
  local port
  port=$(stack_wait_listen keyserver "$STACK_KS_PID" "$STACK_DIR/keyserver.out") ||
    { tail -n 20 "$STACK_DIR/keyserver.log" >&2; stack_die "the keyserver did not start"; }
  STACK_KS_URL=http://127.0.0.1:$port
  STACK_KS_ADMIN_TOKEN_FILE=$ks/admin.token
  curl -sf "$STACK_KS_URL/api/v1/keys" | jq '.roles.director.public_key' >"$STACK_DIR/director.pub"
}

# stack_licence CUSTOMER FILE: the licence key goes into FILE (0600).
stack_licence() {
  local customer=$1 file=$2 end
  end=$(date -u -d '+1 year' +%Y-%m-%dT%H:%M:%SZ)
  umask 077
  curl -sf -H "Authorization: Bearer $(cat "$STACK_KS_ADMIN_TOKEN_FILE")" -H 'Content-Type: application/json' \
    -d "{\"customer\": \"$customer\", \"maintenance_end\": \"$end\", \"features\": []}" \
    "$STACK_KS_URL/api/v1/licences" | jq -r .licence_key >"$file"
  umask 022
  [[ -s "$file" && "$(cat "$file")" != null ]] || stack_die "could not issue a licence"
}

stack_start_updater() {
  mkdir -p "$STACK_DIR/tokens" "$STACK_DIR/repo"
  chmod 700 "$STACK_DIR/tokens"
  for role in admin publisher support; do
    if [[ ! -s "$STACK_DIR/tokens/$role" ]]; then
      umask 077
      "$STACK_BIN/updater" token create --database "$STACK_DB_UPDATER" --name "stack-$role" --role "$role" \
        2>/dev/null | jq -r .token >"$STACK_DIR/tokens/$role"
      umask 022
    fi
  done
  "$STACK_BIN/updater" serve --repo "$STACK_DIR/repo" --database "$STACK_DB_UPDATER" --keyserver "$STACK_KS_URL" \
    --keyserver-token-file "$STACK_DIR/keyserver/updater.token" --listen 127.0.0.1:0 ${STACK_UPDATER_ARGS:-} \
    >"$STACK_DIR/updater.out" 2>"$STACK_DIR/updater.log" &
  STACK_UP_PID=$!
  STACK_PIDS+=("$STACK_UP_PID")
  STACK_UP_PORT=$(stack_wait_listen updater "$STACK_UP_PID" "$STACK_DIR/updater.out") ||
    { tail -n 20 "$STACK_DIR/updater.log" >&2; stack_die "the updater did not start"; }
  STACK_UP_URL=http://127.0.0.1:$STACK_UP_PORT
}

stack_stop() {
  local pid
  for pid in "${STACK_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STACK_PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  STACK_PIDS=()
  [[ -n "${STACK_DIR:-}" && -d "$STACK_DIR/pg" ]] && "$STACK_ROOT/tools/pg" stop "$STACK_DIR/pg" >/dev/null 2>&1 || true
}

# stack_stop, then delete the PostgreSQL cluster's files (tests with a throw-away DIR use this, so
# no cluster is left behind under /var/tmp).
stack_destroy() {
  stack_stop
  [[ -n "${STACK_DIR:-}" && -d "$STACK_DIR/pg" ]] && "$STACK_ROOT/tools/pg" destroy "$STACK_DIR/pg" >/dev/null 2>&1 || true
}
