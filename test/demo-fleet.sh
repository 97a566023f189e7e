#!/usr/bin/env bash
# The main job: `tender serve` with its embedded broker and store, a
# registry with the demo image, a local tender-agent daemon enrolled with a
# join token, the demo app applied and a second version rolled out in
# health-gated waves. Everything lives under build/run/ and keeps running;
# the script ends by saying where to look and how to stop it.
#
# Usage: test/demo-fleet.sh   (as root, after make build testimage deps)
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
run=$top/build/run
tender=$top/build/tender
agent=$top/build/tender-agent
image=$top/build/testimage.tar
api=127.0.0.1:18443
mqtt=127.0.0.1:18883
reg=127.0.0.1:18500

if [ "$(id -u)" != 0 ]; then
	echo "run: tender-agent runs containers as root; run 'sudo make run'" >&2
	exit 1
fi
step() { echo; echo "# $*"; }
say() { echo "+ $*" >&2; "$@"; }

# A previous run is stopped first (its state is kept aside as .old).
if [ -x "$run/stop.sh" ]; then "$run/stop.sh" >/dev/null 2>&1 || true; fi
rm -rf "$run.old"; [ -d "$run" ] && mv "$run" "$run.old"
mkdir -p "$run/controller" "$run/agent" "$run/registry"
chmod 0700 "$run/controller" "$run/agent"

cat > "$run/stop.sh" <<STOP
#!/usr/bin/env bash
# Stops what test/demo-fleet.sh started: the agent's apps and containers,
# the daemon, the controller and the registry.
for f in agent.pid controller.pid registry.pid; do
	[ -f "$run/\$f" ] && kill "\$(cat "$run/\$f")" 2>/dev/null
done
sleep 1
ids=\$("$agent" --root "$run/agent/state" --socket "$run/agent/agent.sock" ps -a -q --no-trunc 2>/dev/null)
[ -n "\$ids" ] && "$agent" --root "$run/agent/state" --socket "$run/agent/agent.sock" rm -f \$ids >/dev/null
echo "stopped (state kept under $run)"
STOP
chmod +x "$run/stop.sh"

step "a registry with the demo image (Debian's docker-registry, plain HTTP on loopback)"
cat > "$run/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $run/registry}}
http: {addr: $reg}
YML
nohup /usr/bin/docker-registry serve "$run/registry.yml" >"$run/registry.log" 2>&1 &
echo $! >"$run/registry.pid"
for _ in $(seq 100); do curl -fsS "http://$reg/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
say go run ./test/bench/pushimage -insecure "$image" "$reg/demo/workload:1"
say go run ./test/bench/pushimage -insecure "$image" "$reg/demo/workload:2"

step "tender serve: the controller with its embedded MQTT broker and bbolt store"
cat > "$run/controller/registries.yaml" <<YML
registries:
  "$reg": {insecure: true}
YML
nohup "$tender" serve --data "$run/controller" --listen "$api" --mqtt "$mqtt" --host 127.0.0.1 \
	--registries "$run/controller/registries.yaml" >"$run/controller.log" 2>&1 &
echo $! >"$run/controller.pid"
for _ in $(seq 200); do [ -s "$run/controller/admin.token" ] && curl -ksS "https://$api/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
export TENDER_SERVER=https://$api TENDER_CA=$run/controller/ca.crt
TENDER_TOKEN=$(cat "$run/controller/admin.token")
export TENDER_TOKEN
say "$tender" status

step "enroll this machine as device demo-gw with a join token"
token=$("$tender" token create --labels site=demo,role=gateway --ttl 1h --uses 1 -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
cat > "$run/agent/agent.yaml" <<YML
stateDir: $run/agent/state
socket: $run/agent/agent.sock
reconcileInterval: 2s
registries:
  "$reg": {insecure: true}
YML
say "$agent" enroll --server "https://$api" --token "$token" --id demo-gw --config "$run/agent/agent.yaml"
nohup "$agent" --root "$run/agent/state" --socket "$run/agent/agent.sock" daemon --config "$run/agent/agent.yaml" >"$run/agent.log" 2>&1 &
echo $! >"$run/agent.pid"
for _ in $(seq 200); do "$tender" devices -o json 2>/dev/null | grep -q '"online": *true' && break; sleep 0.2; done
say "$tender" devices -o wide

app() { # app VERSION: the demo app's spec
	cat <<YML
name: demo
version: "$1"
containers:
  - name: web
    image: $reg/demo/workload:$1
    args: ["serve", "127.0.0.1:18080"]
    env: {DEMO_VERSION: "$1"}
    resources: {memory: 32Mi, cpu: 250m, pids: 32}
    network: host
    health: {http: "http://127.0.0.1:18080/healthz", interval: 2s, timeout: 1s, retries: 2}
placement: {selector: {site: demo}}
rollout: {waves: ["1", "100%"], healthyFor: 5s, failureThreshold: "0"}
YML
}
step "apply the demo app, version 1"
app 1 >"$run/demo-v1.yaml"
say "$tender" apply -f "$run/demo-v1.yaml"
for _ in $(seq 300); do "$tender" apps 2>/dev/null | grep -q '^demo .* 1/1' && break; sleep 0.2; done
say "$tender" apps

step "roll out version 2 (waves of 1, then 100%, each healthy for 5 s)"
app 2 >"$run/demo-v2.yaml"
say "$tender" apply -f "$run/demo-v2.yaml"
say "$tender" rollout status demo --watch --interval 1s || true
say "$tender" apps
say "$agent" --root "$run/agent/state" --socket "$run/agent/agent.sock" apps

cat <<EOT

Running: the controller (https://$api, MQTT TLS $mqtt), the registry ($reg) and the agent.
  admin token:   $run/controller/admin.token (shown once; stored hashed)
  web console:   https://$api/ui/ (sign in with the admin token; the certificate is the fleet CA's: $run/controller/ca.crt)
  environment:   export TENDER_SERVER=https://$api TENDER_CA=$run/controller/ca.crt TENDER_TOKEN=\$(cat $run/controller/admin.token)
  watch:         $tender devices -o wide; $tender apps; $tender rollout status demo --watch; $tender events -f
  device side:   $agent --root $run/agent/state --socket $run/agent/agent.sock apps | ps | logs -f CONTAINER
  logs:          $run/controller.log $run/agent.log
  stop:          $run/stop.sh
EOT
