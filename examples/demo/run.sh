#!/usr/bin/env bash
# The quick start: a dev server, then validate, plan, apply, and plan again to show no changes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
keysync=${KEYSYNC:-keysync}
work=$(pwd)/demo
rm -rf "$work" && mkdir -p "$work" && cp "$here/keysync.yaml" "$work/"
cd "$work"

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"; }

"$keysync" dev-server --port 0 --token demo-owner-token >server.out 2>server.log &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q '^listening on ' server.out && break; sleep 0.1; done
export CODER_URL=$(sed -n 's/^listening on //p' server.out)
if [ -z "$CODER_URL" ]; then echo "the dev server did not start:" >&2; cat server.log >&2; exit 1; fi
export CODER_SESSION_TOKEN=demo-owner-token
echo "dev server at $CODER_URL"

step keysync validate;               "$keysync" validate
step keysync plan;                   "$keysync" plan
step keysync apply --auto-approve;   "$keysync" apply --auto-approve
step "ls -l secrets/";               ls -l secrets/
step "cat secrets/ai-gateway-keys.json  # shown here without the secrets themselves"
python3 -c 'import json;d=json.load(open("secrets/ai-gateway-keys.json"));[r.pop("key") for r in d["keys"].values()];print(json.dumps(d,indent=2))'
step keysync plan --detailed-exitcode; "$keysync" plan --detailed-exitcode
step keysync status;                 "$keysync" status
printf '\nThe demo left its files in %s.\n' "$work"
