#!/usr/bin/env bash
# Browser test of the appliance page's backups and endpoint clients panels (docs/agent/web.md
# "Backups on the page", "Clients on the page"): the server stack on loopback with one enrolled
# appliance (tests/appliance-agent/lib.sh) whose agent.json has a `web` section, a vault key in
# its backup configuration and a `relay` section over a client store of 6 simulated endpoint
# clients (relay-sim make-clients; none connects, so all are offline). Chromium
# (agent_backup.test.mjs) makes a password-protected backup (bad input first), downloads it,
# changes the backed-up configuration file on disk, restores with a wrong then the right password,
# exports the vault key (wrong account password first), uploads the backup and restores it, and
# checks the clients panel (counts, a throttle refused then applied, the CSV export).
# Screenshot: BUILD_DIR/browser/agent_backup.png.
#
# Usage: agent_backup_test.sh BIN_DIR SOURCE_DIR BUILD_DIR    Exit 0 pass, 1 fail, 77 skip.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/agent_web.sh"
agent_web_begin browser-agent-backup "upk updater keyserver appliance-agent relay-sim" "$@"

agent_stack_up

step "an enrolled appliance, auto_install off, a vault key and a relay over 6 endpoint clients"
a=$work/appliance
agent_appliance "$a"
agent "$a" settings auto_install false >settings.out 2>&1 || fail "settings auto_install false: $(cat settings.out)"
(umask 077 && echo "vault-key-of-the-browser-test-0123456789" >"$a/vault.key")
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$a/relay.key" -out "$a/relay.pem" >openssl-relay.out 2>&1 ||
  fail "openssl: $(cat openssl-relay.out)"
"$bin/relay-sim" make-clients 6 --prefix endpoint- -o "$a/relay-clients.json" --secrets "$work/relay-secrets.json" \
  --version 1.0.0 >relay-sim.out 2>&1 || fail "relay-sim make-clients: $(cat relay-sim.out)"
jq --arg d "$a" '.backup.vault_key_path = ($d + "/vault.key")
  | .relay = {listen: "127.0.0.1:0", certificate: ($d + "/relay.pem"), private_key: ($d + "/relay.key"),
              clients: ($d + "/relay-clients.json")}' "$a/agent.json" >agent.json.new
mv agent.json.new "$a/agent.json"

step "the agent daemon, with the updates page"
agent_web_up "$a"
echo "the page: $origin"

step "chromium: backups, restore, vault key export, endpoint clients"
mkdir -p "$work/downloads"
UPKEEP_SETUP_TOKEN_FILE=$work/setup.token UPKEEP_CONF_FILE=$a/etc/app.conf UPKEEP_DOWNLOAD_DIR=$work/downloads \
  UPKEEP_CLIENTS=6 browser_run "$here/agent_backup.test.mjs" "$origin" "$build" ||
  fail "the browser test failed (screenshot: $build/browser/agent_backup.png)"

step "the daemon's side"
grep -q "web: 'admin' asked for a backup" agent.log agent.err || fail "the daemon did not log the backup request"
grep -q "web: 'admin' exported the vault key (password-protected)" agent.log agent.err || fail "no vault key export in the log"
if grep -qE "backup-pass-|export-pass-|correct horse" agent.log agent.err; then fail "a password is in the daemon's log"; fi
vault=$(ls "$work/downloads"/vault-key*.upkbak 2>/dev/null | head -n 1)
[[ -n "$vault" ]] || fail "no vault key file was downloaded"
echo "PASS: backups, restore, vault key export and endpoint clients on the appliance page in Chromium"
