#!/usr/bin/env bash
# The quick start: a dev server, then validate, plan, apply, and plan again to show no changes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
keysync=${KEYSYNC:-keysync}
work=$(pwd)/demo
rm -rf "$work" && mkdir -p "$work" && cp "$here/keysync.yaml" "$work/"
cd "$work"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

"$keysync" dev-server --port 0 --token demo-owner-token >server.out 2>server.log &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q '^listening on ' server.out && break; sleep 0.1; done
export CODER_URL=$(sed -n 's/^listening on //p' server.out)
export CODER_SESSION_TOKEN=demo-owner-token
echo "dev server at $CODER_URL"

step keysync validate;               "$keysync" validate
step keysync plan;                   "$keysync" plan
step keysync apply --auto-approve;   "$keysync" apply --auto-approve
step "ls -l secrets/";               ls -l secrets/
step "jq 'del(.keys[].key)' secrets/ai-gateway-keys.json  # the secrets themselves stay private"
python3 -c 'import json;d=json.load(open("secrets/ai-gateway-keys.json"));[r.pop("key") for r in d["keys"].values()];print(json.dumps(d,indent=2))'
step keysync plan --detailed-exitcode; "$keysync" plan --detailed-exitcode
step keysync status;                 "$keysync" status
printf '\nThe demo left its files in %s.\n' "$work"
