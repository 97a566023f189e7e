#!/bin/bash
# Fleet benchmark (issue 10): N simulated devices (test/fleetsim, default
# 10,000) speaking MQTT over mutual TLS, each with its own certificate,
# verifying every signed desired document as the agent does. For each
# broker: the time to connect them all, the time from publishing one
# generation to every device to the whole fleet reporting it, and the
# simulator's RSS (per device).
#
#   test/bench/fleet.sh [N]
#
# Brokers (FLEET_BROKERS, default "mochi mosquitto"):
#   mochi       embedded mochi (fleetsim broker), the controller's broker
#   mosquitto   Debian's mosquitto with the ACL of configs/mosquitto
#   external    the broker at FLEET_BROKER, e.g. `tender serve`'s:
#     FLEET_BROKER=ssl://127.0.0.1:8883   its address
#     FLEET_CA_CERT, FLEET_CA_KEY          the CA issuing device certificates
#                                          (tender serve: DATA/ca.crt, ca.key)
#     FLEET_ROOT_CA                        CA of the broker's certificate (default FLEET_CA_CERT)
#     FLEET_PUB                            the fleet public key devices verify with
#     FLEET_PUBLISH=0                      let the controller publish instead of
#                                          the test publisher (which then needs
#                                          FLEET_KEY, FLEET_CTL_CERT, FLEET_CTL_KEY)
# Other knobs: FLEET_RATE (connects/s, default 1000), FLEET_APPLY_DELAY (default 0s).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-10000}
RATE=${FLEET_RATE:-1000}
DELAY=${FLEET_APPLY_DELAY:-0s}
BROKERS=${FLEET_BROKERS:-mochi mosquitto}
[ -n "${FLEET_BROKER:-}" ] && BROKERS=external

ulimit -n $((4 * N + 4096)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
W=$(mktemp -d /tmp/fleetbench.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

mkdir -p build
CGO_ENABLED=0 go build -o build/fleetsim ./test/fleetsim/cmd/fleetsim
SIM=$PWD/build/fleetsim
"$SIM" pki -dir "$W/pki"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for FILE PATTERN SECONDS
wait_for() {
	local i=0
	until grep -q "$2" "$1" 2>/dev/null; do
		i=$((i + 1))
		if [ "$i" -gt $(($3 * 10)) ]; then
			echo "gave up waiting for '$2' in $1:" >&2
			tail -5 "$1" >&2
			return 1
		fi
		sleep 0.1
	done
}

start_broker() { # sets URL
	local port
	port=$(free_port)
	case $1 in
	mochi)
		"$SIM" broker -dir "$W/pki" -listen "127.0.0.1:$port" >"$W/mochi.log" 2>&1 &
		PIDS+=($!)
		wait_for "$W/mochi.log" listening 30
		URL=ssl://127.0.0.1:$port
		;;
	mosquitto)
		cat >"$W/mosquitto.conf" <<-EOF
			per_listener_settings false
			allow_anonymous false
			acl_file $PWD/configs/mosquitto/acl
			persistence false
			max_queued_messages 100000
			max_inflight_messages 20
			user root
			log_dest stderr
			log_type error
			log_type warning
			log_type notice
			log_type information
			connection_messages false
			listener $port 127.0.0.1
			cafile $W/pki/ca.crt
			certfile $W/pki/server.crt
			keyfile $W/pki/server.key
			require_certificate true
			use_identity_as_username true
		EOF
		/usr/sbin/mosquitto -c "$W/mosquitto.conf" >"$W/mosquitto.log" 2>&1 &
		PIDS+=($!)
		wait_for "$W/mosquitto.log" running 30
		URL=ssl://127.0.0.1:$port
		;;
	external)
		URL=$FLEET_BROKER
		;;
	esac
}

rss_of() { awk '/VmRSS/ {print $2 * 1024}' "/proc/$1/status"; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }

for B in $BROKERS; do
	start_broker "$B"
	bpid=""
	[ "$B" != external ] && bpid=${PIDS[-1]}
	CA_CERT=$W/pki/ca.crt CA_KEY=$W/pki/ca.key PUB=$W/pki/fleet.pub KEY=$W/pki/fleet.key
	CTL_CERT=$W/pki/controller.crt CTL_KEY=$W/pki/controller.key ROOT=$W/pki/ca.crt
	if [ "$B" = external ]; then
		CA_CERT=$FLEET_CA_CERT CA_KEY=$FLEET_CA_KEY PUB=$FLEET_PUB ROOT=${FLEET_ROOT_CA:-$FLEET_CA_CERT}
		KEY=${FLEET_KEY:-} CTL_CERT=${FLEET_CTL_CERT:-} CTL_KEY=${FLEET_CTL_KEY:-}
	fi
	"$SIM" devices -broker "$URL" -n "$N" -rate "$RATE" -apply-delay "$DELAY" \
		-ca-cert "$CA_CERT" -ca-key "$CA_KEY" -root-ca "$ROOT" -fleet-pub "$PUB" \
		-every 1s -heartbeat 5m >"$W/devices-$B.log" 2>"$W/devices-$B.err" &
	dpid=$!
	PIDS+=($dpid)
	wait_for "$W/devices-$B.log" "^connected" $((N / RATE * 10 + 120))
	connected=$(grep -m1 '^connected' "$W/devices-$B.log")
	if [ "${FLEET_PUBLISH:-1}" != 0 ]; then
		out=$("$SIM" publish -broker "$URL" -n "$N" -fleet-key "$KEY" -ca "$ROOT" -cert "$CTL_CERT" -key "$CTL_KEY" -gen 1 -version 1)
	else
		out="(the controller publishes: roll out now; waiting for the fleet)"
		echo "$out"
		wait_for "$W/devices-$B.log" "\"latency\":{\"n\":$N," 600
	fi
	sleep 1.5 # one more statistics line, after the last report
	last=$(grep '^{' "$W/devices-$B.log" | tail -1)
	rss=$(rss_of "$dpid")
	brss=""
	[ -n "$bpid" ] && [ "$B" != external ] && brss=", broker RSS $(mib "$(rss_of "$bpid")")"
	echo "== $B, $N devices, mutual TLS"
	echo "   $connected (rate limit $RATE/s)"
	echo "   $out"
	echo "   simulator RSS $(mib "$rss"), $((rss / N)) bytes per device$brss"
	echo "   simulator: $(echo "$last" | python3 -c 'import json,sys; s=json.load(sys.stdin); l=s["latency"]; print("Go live heap+stacks %.1f MiB (%d bytes per device); verified %d refused %d reports %d connect errors %d%s disconnects %d goroutines %d; issuedAt->report p50 %.0fms p99 %.0fms max %.0fms" % (s["goLiveBytes"]/1048576, s["goLiveBytes"]//s["devices"], s["verified"], s["refused"], s["reports"], s["connectErrors"], " (last: %s)" % s["lastError"] if s.get("lastError") else "", s["disconnects"], s["goroutines"], l["p50"]/1e6, l["p99"]/1e6, l["max"]/1e6))')"
	kill "$dpid"
	wait "$dpid" 2>/dev/null || true
	[ -n "$bpid" ] && [ "$B" != external ] && { kill "$bpid"; wait "$bpid" 2>/dev/null || true; }
	PIDS=()
done
