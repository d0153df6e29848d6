#!/usr/bin/env bash
# The quick start: a dev server, then validate, plan, apply, and plan again to show no changes;
# then a gateway replica connects with one of the applied keys, and status shows it in use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
keysync=${KEYSYNC:-keysync}
work=$(pwd)/demo
rm -rf "$work" && mkdir -p "$work" && cp "$here/keysync.yaml" "$work/"
cd "$work"

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"; }

# A short heartbeat interval, so the replica's heartbeats show within the demo (Coder's is 60s).
"$keysync" dev-server --port 0 --token demo-owner-token --heartbeat-interval 1s >server.out 2>server.log &
server=$!
replica=
cleanup() {
  for pid in $replica $server; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
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

# What `coder ai-gateway start` does with CODER_AI_GATEWAY_KEY_FILE: read the key once, connect.
python=${PYTHON:-$(dirname "$(command -v "$keysync")")/python}
[ -x "$python" ] || python=python3
(umask 077; python3 -c 'import json;print(json.load(open("secrets/ai-gateway-keys.json"))["keys"]["gateway-us-east"]["key"])' >gateway-us-east.key)
step "python -m keysync.devserver.replica --url \$CODER_URL --key-file gateway-us-east.key &"
"$python" -m keysync.devserver.replica --url "$CODER_URL" --key-file gateway-us-east.key >replica.out 2>replica.log &
replica=$!
for _ in $(seq 100); do grep -q '^replica connected' replica.out && break; sleep 0.1; done
cat replica.out
step "keysync status  # gateway-us-east is in use: its replica's last heartbeat"
"$keysync" status
printf '\nThe demo left its files in %s.\n' "$work"
