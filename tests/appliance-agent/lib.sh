# Shared set-up of the agent's end-to-end and crash tests (sourced): the server stack with a
# bootstrapped repository and the releases of the test path published, and appliances provisioned
# with the factory versions and enrolled. Expects: $bin, $src, $work, fail(), step(), and cd "$work".
#
#   agent_stack_up              PostgreSQL, keyserver, updater; keys; base 1.0.0, 2.0.0 and
#                               software 7.0.0, 7.1.0, 8.0.0 (8.0.0 needs base 2.0.0 and 7.1.0) published
#   agent_appliance DIR         a fresh appliance under DIR (config DIR/agent.json): init, provision
#                               base 1.0.0 + software 7.0.0, enrol, opt in to the new major lines;
#                               sets $appliance_id
#   agent DIR ARGS...           runs appliance-agent with DIR's configuration

upk="$bin/upk"
agent() { local dir=$1; shift; "$bin/appliance-agent" --config "$dir/agent.json" "$@"; }

# pack NAME VERSION KIND UPGRADES_FROM REQUIRES...: a files package whose health check checks that
# its own VERSION file is active, and fails once while the marker DIR/fail-once-NAME-VERSION exists.
pack() {
  local name=$1 version=$2 kind=$3 from=$4
  shift 4
  local dir=src-$name-$version
  mkdir -p "$dir/bin"
  echo "$version" >"$dir/VERSION"
  head -c 100000 /dev/urandom >"$dir/bin/$name.data"
  cat >"$dir/bin/health" <<'EOF'
#!/bin/sh
marker="$UPKEEP_ROOT/../fail-once-$UPKEEP_PACKAGE-$UPKEEP_VERSION"
if [ -e "$marker" ]; then rm -f "$marker"; echo "service did not come up (simulated)"; exit 1; fi
[ "$(cat "$UPKEEP_ROOT/packages/$UPKEEP_PACKAGE/current/VERSION")" = "$UPKEEP_VERSION" ] || { echo "wrong version active"; exit 1; }
echo "healthy: $UPKEEP_PACKAGE $UPKEEP_VERSION"
EOF
  chmod 755 "$dir/bin/health"
  echo '{"install": {"handler": "files", "health_check": {"command": ["bin/health"], "timeout_seconds": 30}}}' \
    >"extra-$name-$version.json"
  local args=(pack --name "$name" --version "$version" --kind "$kind" --key targets.key --dir "$dir"
              --manifest-extra "extra-$name-$version.json" -o "$name-$version.upk")
  [[ "$from" != - ]] && args+=(--upgrades-from "$from")
  for r in "$@"; do args+=(--requires "$r"); done
  "$upk" -q "${args[@]}" >/dev/null || fail "upk pack $name $version"
}

agent_stack_up() {
  step "PostgreSQL, keyserver, updater"
  export STACK_FAST_KDF=1
  stack_start_pg
  stack_start_keyserver
  stack_start_updater
  export UPKEEP_SERVER=$STACK_UP_URL UPKEEP_TOKEN

  step "operator: offline keys, repository bootstrap, releases packed and published"
  "$upk" keygen root.key >/dev/null
  "$upk" keygen targets.key >/dev/null
  UPKEEP_TOKEN=$(cat "$work/stack/tokens/admin") "$upk" repo bootstrap --root-key root.key --targets-key targets.key \
    >bootstrap.out 2>&1 || fail "upk repo bootstrap: $(cat bootstrap.out)"
  curl -sf "$STACK_UP_URL/repo/metadata/1.root.json" -o trusted-root.json || fail "root v1 not served"
  UPKEEP_TOKEN=$(cat "$work/stack/tokens/publisher")

  pack base 1.0.0 base -
  pack base 2.0.0 base 1.0.0
  pack software 7.0.0 software - 'base>=1.0.0'
  pack software 7.1.0 software - 'base>=1.0.0'
  pack software 8.0.0 software 7.1.0 'base>=2.0.0'
  for r in base-1.0.0 base-2.0.0 software-7.0.0 software-7.1.0 software-8.0.0; do
    "$upk" publish "$r.upk" --targets-key targets.key >"publish-$r.out" 2>&1 || fail "publish $r: $(cat "publish-$r.out")"
  done
}

agent_appliance() {
  local dir=$1
  mkdir -p "$dir/etc"
  echo "setting=1" >"$dir/etc/app.conf"
  agent "$dir" init --state-dir "$dir/state" --system-root "$dir/system" --updater "$STACK_UP_URL" \
    --director-key "$work/stack/director.pub" --trust-root "$work/trusted-root.json" --backup-path "$dir/etc" \
    >"$dir/init.out" 2>&1 || fail "agent init: $(cat "$dir/init.out")"
  appliance_id=$(cat "$dir/init.out")
  [[ "$appliance_id" == apl-* ]] || fail "agent init printed no appliance id: $appliance_id"
  agent "$dir" provision "$work/base-1.0.0.upk" "$work/software-7.0.0.upk" >"$dir/prov.out" 2>&1 ||
    fail "provision: $(cat "$dir/prov.out")"
  stack_licence "ACME Corp" "$dir/licence.key"  # a licence binds one appliance
  agent "$dir" enrol --licence-key-file "$dir/licence.key" >"$dir/enrol.out" 2>&1 || fail "enrolment: $(cat "$dir/enrol.out")"
  # The updater knows an appliance from its first check-in on.
  agent "$dir" check >"$dir/check0.out" 2>&1 || fail "first check-in: $(cat "$dir/check0.out")"
  "$upk" appliance set "$appliance_id" --allow-major base --allow-major software >"$dir/allow.out" 2>&1 ||
    fail "upk appliance set --allow-major: $(cat "$dir/allow.out")"
}
