#!/bin/bash
# Fleet benchmark (issue 10): N simulated devices (test/fleetsim, default
# 10,000) speaking MQTT over mutual TLS, each with its own certificate,
# verifying every signed desired document as the agent does.
#
#   test/bench/fleet.sh [N]          (make bench-fleet; FLEET_N=1000 make bench-fleet)
#
# Modes (FLEET_BROKERS, default "serve"):
#   serve       `tender serve` with its embedded broker: the devices enroll
#               through POST /v1/enroll with one join token of N uses (the
#               controller runs with --enroll-rate, the benchmark-only knob
#               raising the per-address limit), connect with the
#               certificates and fleet key enrollment gave them, then the
#               demo app is applied (version 1) and rolled out to version 2
#               in waves of 1%, 10%, 100%, no soak (healthyFor 0,
#               maxUnavailable 100%: the waves are the only gate). For each:
#               the time from `tender apply` to the rollout succeeded with
#               every device reporting the version (polled with `tender
#               rollout status demo -o json`), the controller's CPU seconds
#               (utime+stime from /proc) over it; the controller's RSS with
#               the fleet connected, its peak (VmHWM), and RSS per device.
#   mochi       bare embedded mochi (fleetsim broker) and the test publisher
#   mosquitto   bare mosquitto with the ACL of configs/mosquitto and the test publisher
#   external    the broker at FLEET_BROKER and the test publisher:
#     FLEET_BROKER=ssl://127.0.0.1:8883   its address
#     FLEET_CA_CERT, FLEET_CA_KEY          the CA issuing device certificates
#     FLEET_ROOT_CA                        CA of the broker's certificate (default FLEET_CA_CERT)
#     FLEET_PUB                            the fleet public key devices verify with
#     FLEET_PUBLISH=0                      let a controller publish instead of
#                                          the test publisher (which then needs
#                                          FLEET_KEY, FLEET_CTL_CERT, FLEET_CTL_KEY)
# Other knobs: FLEET_RATE (connects/s, default 1000), FLEET_APPLY_DELAY
# (default 0s), FLEET_ENROLL_WORKERS (default 4), FLEET_GOMEMLIMIT (serve:
# the controller's GOMEMLIMIT, Go's soft memory limit; unset by default),
# FLEET_PROFILE=DIR (serve:
# keep the controller's heap profiles, connected and after the rollouts,
# and CPU profiles of each rollout's first 20 s, taken from its
# --debug-addr listener; `go tool pprof -sample_index=inuse_space
# build/tender DIR/heap-connected.pb.gz`).
#
# Issue 13's form: test/bench/fleet.sh --devices N --broker mosquitto
# [--controllers 2] [--etcd 3] [--edges K]: the controller(s) behind
# mosquitto (the ctl-mosquitto mode below); --broker embedded is the serve
# mode. Past FLEET_EDGE_MAX devices (default 18,000: one mosquitto process
# holds at most 20,000 open files here) the devices connect to K "edge"
# mosquittos (default: one per FLEET_EDGE_MAX devices; FLEET_EDGES=K or
# --edges K forces it, 0 for one mosquitto) bridged to one "core" that the
# controllers connect to, with configs/mosquitto/bridge.
set -euo pipefail
cd "$(dirname "$0")/../.."
while [ $# -gt 0 ]; do
	case $1 in
	--devices) FLEET_N=$2 && shift 2 ;;
	--broker)
		case $2 in
		mosquitto) FLEET_BROKERS=ctl-mosquitto ;;
		embedded | serve) FLEET_BROKERS=serve ;;
		*) echo "--broker $2: want mosquitto or embedded (FLEET_BROKERS for the bare-broker modes)" >&2 && exit 2 ;;
		esac
		shift 2
		;;
	--controllers) FLEET_CONTROLLERS=$2 && shift 2 ;;
	--etcd) FLEET_ETCD=$2 && shift 2 ;;
	--edges) FLEET_EDGES=$2 && shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' && exit 0 ;;
	-*) echo "unknown option $1 (-h for help)" >&2 && exit 2 ;;
	*) FLEET_N=$1 && shift ;;
	esac
done
N=${FLEET_N:-10000}
RATE=${FLEET_RATE:-1000}
DELAY=${FLEET_APPLY_DELAY:-0s}
BROKERS=${FLEET_BROKERS:-serve}
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

# wait_for FILE PATTERN SECONDS [PID]: gives up early when PID ends
wait_for() {
	local i=0
	until grep -q "$2" "$1" 2>/dev/null; do
		i=$((i + 1))
		if [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null; then
			echo "process $4 ended before '$2' in $1" >&2
			return 1
		fi
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

# --- `tender serve` modes -------------------------------------------------
TENDER=$PWD/build/tender
HZ=$(getconf CLK_TCK)
cpu_of() { awk -v hz="$HZ" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; } # utime+stime, seconds
hwm_of() { awk '/VmHWM/ {print $2 * 1024}' "/proc/$1/status"; }
parts_of() { awk '/RssAnon|RssFile/ {printf "%s %.1f MiB ", $1, $2 / 1024}' "/proc/$1/status"; } # heap and stacks vs the store's mmap
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }

app_spec() { # VERSION: the demo app, on every device, waves of 1%, 10%, 100%, no soak
	cat <<-EOF
		name: demo
		version: "$1"
		containers:
		  - name: main
		    image: $REG/demo/workload:$1
		    resources: {memory: 16Mi, cpu: 10m}
		placement: {selector: {fleet: bench}}
		rollout: {waves: ["1%", "10%", "100%"], maxUnavailable: "100%"}
	EOF
}

# gomem: the controller's Go memory (runtime.MemStats at the end of a
# debug=1 heap profile): heap in use, stacks, goroutines.
gomem() {
	local g
	g=$(curl -fsS "http://$DEBUG/debug/pprof/goroutine?debug=1" | awk 'NR == 1 {print $4}')
	curl -fsS "http://$DEBUG/debug/pprof/heap?debug=1" | awk -v g="$g" '
		/^# HeapInuse/ {h = $4} /^# HeapIdle/ {i = $4} /^# HeapReleased/ {r = $4} /^# Stack = / {split($4, a, "/"); st = a[1]}
		END {printf "Go heap in use %.1f MiB (idle not released %.1f MiB), stacks %.1f MiB, %d goroutines", h / 1048576, (i - r) / 1048576, st / 1048576, g}'
}

# profile NAME: keeps a heap profile of the controller under FLEET_PROFILE.
profile() {
	[ -n "${FLEET_PROFILE:-}" ] || return 0
	mkdir -p "$FLEET_PROFILE"
	curl -fsS -o "$FLEET_PROFILE/heap-$1.pb.gz" "http://$DEBUG/debug/pprof/heap"
	curl -fsS -o "$FLEET_PROFILE/goroutine-$1.txt" "http://$DEBUG/debug/pprof/goroutine?debug=1"
}

# timed CMD...: runs CMD, adds its wall time (seconds) to API_TIMES; a
# failure (the CLI gives up after 30 s) counts as its time and in API_FAIL.
timed() {
	local t0
	t0=$(now)
	if ! "$@" >/dev/null 2>&1; then API_FAIL=$((API_FAIL + 1)); fi
	API_TIMES="$API_TIMES $(secs "$t0" "$(now)")"
}
stat_times() { # "n N, median Xs, max Ys" of a list of seconds
	echo "$1" | tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR] = $1} END {if (NR == 0) {print "none"; exit} printf "n %d, median %.2fs, max %.2fs", NR, a[int((NR + 1) / 2)], a[NR]}'
}

# rollout VERSION: applies the demo app at VERSION and waits for its
# rollout to succeed; sets ROLL (seconds from apply to succeeded), CPU
# (controller CPU seconds over it), APPLIED (the apply's answer time) and
# APIWHILE (times of `tender apps` and `tender apply` of the same spec,
# which changes nothing, called while the rollout runs).
rollout() {
	app_spec "$1" >"$W/demo-$1.yaml"
	local c0=() t0 phase i=0 apps_t="" apply_t="" fails=0 p
	for p in "${CTLS[@]}"; do c0+=("$(cpu_of "$p")"); done
	local cpuprof=""
	if [ -n "${FLEET_PROFILE:-}" ]; then # the controller's CPU over the rollout's first 20 s
		curl -fsS -o "$FLEET_PROFILE/cpu-rollout-$1.pb.gz" "http://$DEBUG/debug/pprof/profile?seconds=20" &
		cpuprof=$!
	fi
	t0=$(now)
	if ! "$TENDER" apply -f "$W/demo-$1.yaml" >/dev/null; then
		echo "   (tender apply of $1 got no answer in the CLI's 30 s: the API waits for the controller's loop; polling for the rollout it started)" >&2
	fi
	APPLIED=$(secs "$t0" "$(now)")
	until phase=$("$TENDER" rollout status demo -o json 2>/dev/null | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["phase"] if r["to"].startswith(sys.argv[1]) else "")' "$1" 2>/dev/null) &&
		[ "$phase" = succeeded ]; do
		API_TIMES="" API_FAIL=0
		timed "$TENDER" apps
		apps_t="$apps_t $API_TIMES" API_TIMES=""
		timed "$TENDER" apply -f "$W/demo-$1.yaml"
		apply_t="$apply_t $API_TIMES" fails=$((fails + API_FAIL))
		case $phase in rolled-back | aborted | rolling-back)
			echo "rollout of $1: $phase" >&2
			"$TENDER" rollout status demo >&2
			return 1
			;;
		esac
		i=$((i + 1))
		[ "$i" -gt 3000 ] && { echo "rollout of $1 did not end in 10 minutes" >&2; "$TENDER" rollout status demo >&2; return 1; }
		sleep 0.2
	done
	ROLL=$(secs "$t0" "$(now)")
	CPU="" i=0
	for p in "${CTLS[@]}"; do CPU="$CPU${CPU:+ + }$(sub "${c0[$i]}" "$(cpu_of "$p")")"; i=$((i + 1)); done
	[ -n "$cpuprof" ] && { wait "$cpuprof" || true; }
	APIWHILE="tender apps $(stat_times "$apps_t"); tender apply (unchanged) $(stat_times "$apply_t"); $fails calls failed"
}

start_registry() { # at REG, with the demo image's versions 1 and 2
	mkdir -p "$W/registry"
	cat >"$W/registry.yml" <<-EOF
		version: 0.1
		log: {level: error, accesslog: {disabled: true}}
		storage: {filesystem: {rootdirectory: $W/registry}}
		http: {addr: $REG}
	EOF
	/usr/bin/docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 100); do curl -fsS "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
	for v in 1 2; do "$PUSH" -insecure build/testimage.tar "$REG/demo/workload:$v" >/dev/null; done
	printf 'registries:\n  "%s": {insecure: true}\n' "$REG" >"$W/registries.yaml"
}

run_serve() {
	local mode=$1 api mqtt regport data=$W/controller
	api=$(free_port) mqtt=$(free_port) regport=$(free_port)
	DEBUG=127.0.0.1:$(free_port)
	REG=127.0.0.1:$regport
	mkdir -p "$data"
	chmod 0700 "$data"
	start_registry

	${FLEET_GOMEMLIMIT:+env GOMEMLIMIT=$FLEET_GOMEMLIMIT} "$TENDER" serve --data "$data" --listen "127.0.0.1:$api" --mqtt "127.0.0.1:$mqtt" --host 127.0.0.1 \
		--registries "$W/registries.yaml" --enroll-rate 100000 --log-level warn --debug-addr "$DEBUG" >"$W/controller.log" 2>&1 &
	CPID=$!
	PIDS+=($CPID)
	CTLS=("$CPID")
	for _ in $(seq 300); do [ -s "$data/admin.token" ] && curl -ksS "https://127.0.0.1:$api/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
	export TENDER_SERVER=https://127.0.0.1:$api TENDER_CA=$data/ca.crt
	TENDER_TOKEN=$(cat "$data/admin.token")
	export TENDER_TOKEN
	local rss0 token
	rss0=$(rss_of "$CPID")
	token=$("$TENDER" token create --labels fleet=bench --ttl 2h --uses "$N" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

	"$SIM" devices -enroll "https://127.0.0.1:$api" -token "$token" -enroll-workers "${FLEET_ENROLL_WORKERS:-4}" \
		-n "$N" -rate "$RATE" -apply-delay "$DELAY" -every 1s -heartbeat 5m \
		>"$W/devices-$mode.log" 2>"$W/devices-$mode.err" &
	dpid=$!
	PIDS+=($dpid)
	wait_for "$W/devices-$mode.log" "^enrolled" $((N / 10 + 120)) "$dpid" || { cat "$W/devices-$mode.err" >&2; return 1; }
	wait_for "$W/devices-$mode.log" "^connected" $((N / RATE * 10 + 120)) "$dpid" || { cat "$W/devices-$mode.err" >&2; return 1; }
	local i=0 online=0
	until online=$("$TENDER" status -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["online"])' 2>/dev/null) && [ "$online" -ge "$N" ]; do
		i=$((i + 1))
		[ "$i" -gt 600 ] && { echo "only $online of $N devices online at the controller after 2 minutes" >&2; return 1; }
		sleep 0.2
	done
	local rss1 cpu1 parts1 go1
	rss1=$(rss_of "$CPID") cpu1=$(cpu_of "$CPID") parts1=$(parts_of "$CPID") go1=$(gomem)
	profile connected

	rollout 1
	local roll1=$ROLL cpuroll1=$CPU app1=$APPLIED api1=$APIWHILE
	rollout 2
	local roll2=$ROLL cpuroll2=$CPU app2=$APPLIED api2=$APIWHILE
	sleep 1.5 # one more statistics line, after the last report
	local rss2 hwm last parts2 go2
	rss2=$(rss_of "$CPID") hwm=$(hwm_of "$CPID") parts2=$(parts_of "$CPID") go2=$(gomem)
	profile after
	last=$(grep '^{' "$W/devices-$mode.log" | tail -1)
	echo "== tender serve (embedded broker), $N devices, mutual TLS${FLEET_GOMEMLIMIT:+, GOMEMLIMIT=$FLEET_GOMEMLIMIT}"
	echo "   $(grep -m1 '^enrolled' "$W/devices-$mode.log") through POST /v1/enroll"
	echo "   $(grep -m1 '^connected' "$W/devices-$mode.log") (rate limit $RATE/s); all online at the controller"
	echo "   apply version 1 (first install) -> rollout succeeded: ${roll1}s (tender apply answered in ${app1}s), controller CPU ${cpuroll1}s"
	echo "      API while it rolled out: $api1"
	echo "   apply version 2 (waves 1%, 10%, 100%, no soak) -> rollout succeeded, every device reporting it: ${roll2}s (tender apply answered in ${app2}s), controller CPU ${cpuroll2}s"
	echo "      API while it rolled out: $api2"
	echo "   controller RSS: $(mib "$rss0") idle, $(mib "$rss1") with the fleet connected ($(((rss1 - rss0) / N)) bytes per device), $(mib "$rss2") after the rollouts, peak $(mib "$hwm"); CPU ${cpu1}s up to all connected"
	echo "   controller RSS split: connected: $parts1; after: $parts2; store $(mib "$(stat -c %s "$data/fleet.db" 2>/dev/null || echo 0)")"
	echo "   controller Go memory: connected: $go1; after: $go2"
	echo "   simulator RSS $(mib "$(rss_of "$dpid")"); $(echo "$last" | python3 -c 'import json,sys; s=json.load(sys.stdin); l=s["latency"]; print("verified %d refused %d reports %d connect errors %d disconnects %d; issuedAt->report (both rollouts) p50 %.0fms p99 %.0fms max %.0fms" % (s["verified"], s["refused"], s["reports"], s["connectErrors"], s["disconnects"], l["p50"]/1e6, l["p99"]/1e6, l["max"]/1e6))')"
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	PIDS=()
}

# --- `tender serve --broker` on mosquitto, one or two controllers ----------
# (FLEET_BROKERS=ctl-mosquitto; issue 13). One controller keeps its state
# in bbolt; FLEET_CONTROLLERS=2 runs two sharing an etcd store of
# FLEET_ETCD members (default 1; 3 for a quorum), the second with a copy
# of the first's data directory, --id b and --broker-identity
# tender-controller-2, both on one mosquitto with configs/mosquitto's
# config and ACL (its max_queued_messages raised to 100000: a burst of N
# reports queues for a controller). The devices enroll at the first
# controller (a join token per simulator), in FLEET_SIMS simulator
# processes (default one per 9,000 devices; the hard limit of open files,
# 20,000 here, binds each process and mosquitto). Past FLEET_EDGE_MAX
# devices (18,000) the single mosquitto becomes FLEET_EDGES edges (one per
# 18,000) bridged to a core, configs/mosquitto/bridge as shipped (the
# edges' max_queued_messages 100,000, the core's 200,000), each edge on a
# port of its own on 127.0.0.1 (the ephemeral ports are per destination),
# a whole number of simulators per edge; reported besides: each broker's
# RSS and CPU, and its CPU and socket bytes over each rollout (the fan-out
# of every document to every edge). Measured: the burst (SIGUSR1 to the simulators: every
# device reports at once) ingested per second, from the sum of the
# controllers' tender_reports_ingested_total; the rollouts as above; RSS
# and CPU of each controller, mosquitto and etcd.

metric_of() { # API: the controller's tender_reports_ingested_total
	curl -ksS -H "Authorization: Bearer $TENDER_TOKEN" "https://$1/metrics" | awk '$1 == "tender_reports_ingested_total" {printf "%d", $2}'
}
ingested() { local t=0 a; for a in "${APIS[@]}"; do t=$((t + $(metric_of "$a"))); done; echo "$t"; }

start_etcd() { # N DIR: sets STORE
	local n=$1 i init="" urls=() peers=()
	for i in $(seq "$n"); do urls+=("127.0.0.1:$(free_port)"); peers+=("http://127.0.0.1:$(free_port)"); init="$init${init:+,}e$i=${peers[-1]}"; done
	for i in $(seq "$n"); do
		/usr/bin/etcd --name "e$i" --data-dir "$2/e$i" --listen-client-urls "http://${urls[$((i - 1))]}" --advertise-client-urls "http://${urls[$((i - 1))]}" \
			--listen-peer-urls "${peers[$((i - 1))]}" --initial-advertise-peer-urls "${peers[$((i - 1))]}" \
			--initial-cluster "$init" --initial-cluster-state new --initial-cluster-token tender-bench \
			--auto-compaction-mode periodic --auto-compaction-retention 1h --quota-backend-bytes $((8 << 30)) \
			--log-level warn --logger zap --log-outputs stderr >"$2/e$i.log" 2>&1 &
		PIDS+=($!) ETCDS+=($!)
	done
	STORE=etcd://$(IFS=,; echo "${urls[*]}")
	for _ in $(seq 300); do curl -fsS "http://${urls[0]}/health" 2>/dev/null | grep -q '"health":"true"' && return 0; sleep 0.1; done
	echo "etcd did not become healthy" >&2
	return 1
}

run_ctl_mosquitto() {
	local nctl=${FLEET_CONTROLLERS:-1} mport regport data=$W/controller
	mport=$(free_port) regport=$(free_port)
	REG=127.0.0.1:$regport
	start_registry
	ETCDS=() APIS=() CTLS=()
	local store=()
	if [ "$nctl" -ge 2 ]; then
		mkdir -p "$W/etcd"
		start_etcd "${FLEET_ETCD:-1}" "$W/etcd"
		store=(--store "$STORE" --id a --lease-ttl 5s)
	fi
	mkdir -p "$data" && chmod 0700 "$data"
	local api
	api=127.0.0.1:$(free_port) DEBUG=127.0.0.1:$(free_port)
	"$TENDER" serve --data "$data" --listen "$api" --broker "ssl://127.0.0.1:$mport" --host 127.0.0.1 \
		--registries "$W/registries.yaml" --enroll-rate 100000 --log-level warn --debug-addr "$DEBUG" "${store[@]}" >"$W/controller-a.log" 2>&1 &
	CPID=$!
	PIDS+=($CPID) CTLS+=($CPID) APIS+=("$api")
	for _ in $(seq 300); do [ -s "$data/crl.pem" ] && break; sleep 0.1; done
	local edge_max=${FLEET_EDGE_MAX:-18000} edges eurls=()
	edges=${FLEET_EDGES:-$((N > edge_max ? (N + edge_max - 1) / edge_max : 0))}
	MPIDS=() MNAMES=()
	if [ "$edges" -gt 0 ]; then
		# edges bridged to a core: configs/mosquitto/bridge, paths, ports
		# and names rewritten; each edge's bridge certificate from the
		# fleet CA (DATA/ca.key)
		for _ in $(seq 300); do [ -s "$data/ca.key" ] && [ -s "$data/server.key" ] && break; sleep 0.1; done
		local eaddrs=() k conf
		for k in $(seq "$edges"); do eaddrs+=("127.0.0.1:$(free_port)"); done
		"$SIM" bridge -repo "$PWD" -dir "$W/mosq" -ca-cert "$data/ca.crt" -ca-key "$data/ca.key" \
			-server-cert "$data/server.crt" -server-key "$data/server.key" -crl "$data/crl.pem" \
			-core "127.0.0.1:$mport" -edges "$(IFS=,; echo "${eaddrs[*]}")" -quiet >"$W/bridge.txt"
		conf=$(awk '$1 == "core" {print $2}' "$W/bridge.txt")
		/usr/sbin/mosquitto -c "$conf" >"$W/mosquitto-core.log" 2>&1 &
		PIDS+=($!) MPIDS+=($!) MNAMES+=(core)
		wait_for "$W/mosquitto-core.log" running 30
		for k in $(seq "$edges"); do
			conf=$(awk -v k="$k" '$1 == "edge" && $2 == k {print $3}' "$W/bridge.txt")
			/usr/sbin/mosquitto -c "$conf" >"$W/mosquitto-edge-$k.log" 2>&1 &
			PIDS+=($!) MPIDS+=($!) MNAMES+=("edge $k")
			eurls+=("ssl://${eaddrs[$((k - 1))]}")
		done
		for k in $(seq "$edges"); do wait_for "$W/mosquitto-edge-$k.log" running 30; done
		# every edge's bridge up at the core (and the controller)
		local i=0
		until [ "$(ss -Htn state established "( sport = :$mport )" | wc -l)" -ge $((edges + 1)) ]; do
			i=$((i + 1))
			[ "$i" -gt 300 ] && { echo "the edges' bridges did not connect to the core" >&2; tail -3 "$W"/mosquitto-*.log >&2; return 1; }
			sleep 0.1
		done
	else
		# mosquitto: the shipped config and ACL, paths and ports rewritten
		mkdir -p "$W/mosq"
		cp configs/mosquitto/acl "$W/mosq/acl"
		: >"$W/mosq/passwd"
		sed -e "s| /etc/mosquitto/tender/device-ca.crt$| $data/ca.crt|; s| /etc/mosquitto/tender/server.crt$| $data/server.crt|" \
			-e "s| /etc/mosquitto/tender/server.key$| $data/server.key|; s| /etc/mosquitto/tender/crl.pem$| $data/crl.pem|" \
			-e "s|/etc/mosquitto/tender/|$W/mosq/|; s|persistence_location /var/lib/mosquitto/|persistence_location $W/mosq/|" \
			-e "s|^user mosquitto|user root|; s|^listener 8883|listener $mport 127.0.0.1|; s|^listener 8884|listener $(free_port) 127.0.0.1|" \
			-e "s|^max_queued_messages .*|max_queued_messages 100000|; s|^connection_messages true|connection_messages false|" \
			configs/mosquitto/mosquitto.conf >"$W/mosq/mosquitto.conf"
		/usr/sbin/mosquitto -c "$W/mosq/mosquitto.conf" >"$W/mosquitto.log" 2>&1 &
		PIDS+=($!) MPIDS+=($!) MNAMES+=(mosquitto)
	fi
	for _ in $(seq 300); do [ -s "$data/admin.token" ] && curl -ksS "https://$api/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
	export TENDER_SERVER=https://$api TENDER_CA=$data/ca.crt
	TENDER_TOKEN=$(cat "$data/admin.token")
	export TENDER_TOKEN
	if [ "$nctl" -ge 2 ]; then
		cp -a "$data" "$W/controller-b"
		local api2
		api2=127.0.0.1:$(free_port)
		"$TENDER" serve --data "$W/controller-b" --listen "$api2" --broker "ssl://127.0.0.1:$mport" --host 127.0.0.1 \
			--registries "$W/registries.yaml" --log-level warn --store "$STORE" --id b --lease-ttl 5s \
			--broker-identity tender-controller-2 >"$W/controller-b.log" 2>&1 &
		PIDS+=($!) CTLS+=($!) APIS+=("$api2")
		local i=0
		until [ "$("$TENDER" status -o json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("members") or []))' 2>/dev/null)" = 2 ]; do
			i=$((i + 1))
			[ "$i" -gt 300 ] && { echo "the second controller did not join" >&2; tail -5 "$W/controller-b.log" >&2; return 1; }
			sleep 0.1
		done
	fi
	local rss0=() p
	for p in "${CTLS[@]}"; do rss0+=("$(rss_of "$p")"); done
	# simulator processes of at most 9,000 devices; with edges, a whole
	# number of them per edge (sim k connects to edge (k-1) mod edges)
	local sims=${FLEET_SIMS:-$(((N + 8999) / 9000))} k per rest sp=() logs=()
	[ "$edges" -gt 0 ] && sims=$((edges * ((sims + edges - 1) / edges)))
	per=$((N / sims)) rest=$((N % sims))
	local tsims
	tsims=$(now)
	for k in $(seq "$sims"); do
		local n=$per burl=()
		[ "$k" -le "$rest" ] && n=$((n + 1))
		[ "$edges" -gt 0 ] && burl=(-broker "${eurls[$(((k - 1) % edges))]}")
		# a join token per simulator: with one for all, their enrollments
		# race for its uses (a compare-and-swap each; the losers are
		# answered 503 and retry), which at 100,000 devices cost more
		# than half the controller's enrollment work
		local token
		token=$("$TENDER" token create --labels fleet=bench --ttl 4h --uses "$n" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
		"$SIM" devices -enroll "https://$api" -token "$token" -enroll-workers "${FLEET_ENROLL_WORKERS:-4}" -prefix "sim$k-" "${burl[@]}" \
			-n "$n" -rate "$((RATE / sims))" -apply-delay "$DELAY" -every 1s -heartbeat 1h >"$W/devices-$k.log" 2>"$W/devices-$k.err" &
		PIDS+=($!) sp+=($!) logs+=("$W/devices-$k.log")
	done
	for k in $(seq "$sims"); do
		wait_for "${logs[$((k - 1))]}" "^connected" $((N / 10 + N / RATE * 10 + 240)) "${sp[$((k - 1))]}" || { cat "$W/devices-$k.err" >&2; return 1; }
	done
	local tconn
	tconn=$(now)
	local i=0 online=0
	until online=$("$TENDER" status -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["online"])' 2>/dev/null) && [ "$online" -ge "$N" ]; do
		i=$((i + 1))
		[ "$i" -gt $((600 + N / 100)) ] && { echo "only $online of $N devices online at the controller after $((120 + N / 500)) s" >&2; return 1; }
		sleep 0.2
	done
	local tonline
	tonline=$(now)
	sleep 2 # the connect reports ingested
	local rss1=() cpu1=()
	for p in "${CTLS[@]}"; do rss1+=("$(rss_of "$p")") cpu1+=("$(cpu_of "$p")"); done

	# the burst: every device reports at once
	local bursts=() b
	for b in $(seq "${FLEET_BURSTS:-3}"); do
		local g0 t0 g c0=() c1="" tb
		# quiet first: the counter unchanged over 2 s (the last burst's or
		# the connect reports may still be queued for the controllers)
		g0=$(ingested) i=0
		while sleep 2 && g=$(ingested) && [ "$g" != "$g0" ]; do
			g0=$g i=$((i + 1))
			[ "$i" -gt 150 ] && { echo "ingest did not settle in 5 minutes" >&2; break; }
		done
		for p in "${CTLS[@]}"; do c0+=("$(cpu_of "$p")"); done
		t0=$(now)
		for p in "${sp[@]}"; do kill -USR1 "$p"; done
		i=0
		until g=$(ingested) && [ $((g - g0)) -ge "$N" ]; do
			i=$((i + 1))
			[ "$i" -gt 1200 ] && { echo "burst $b: only $((g - g0)) of $N reports ingested after 2 minutes" >&2; break; }
			sleep 0.1
		done
		tb=$(secs "$t0" "$(now)")
		i=0
		for p in "${CTLS[@]}"; do c1="$c1${c1:+ + }$(sub "${c0[$i]}" "$(cpu_of "$p")")"; i=$((i + 1)); done
		local split="" a
		for a in "${APIS[@]}"; do split="$split${split:+/}$(metric_of "$a")"; done
		bursts+=("$(awk -v n=$((g - g0)) -v t="$tb" 'BEGIN {printf "%d reports in %.1fs = %.0f/s", n, t, n / t}') (controller CPU $c1 s; ingested so far per controller $split)")
		sleep 2
	done

	# the brokers' CPU and socket bytes (rchar/wchar) over each rollout:
	# what the fan-out of every document to every edge costs
	mstat() { local p; for p in "${MPIDS[@]}"; do echo "$(cpu_of "$p") $(awk '/^rchar/ {r = $2} /^wchar/ {w = $2} END {print r, w}' "/proc/$p/io")"; done; }
	mdelta() { # BEFORE AFTER (mstat outputs): one line per broker
		paste <(echo "$1") <(echo "$2") | awk -v names="$(IFS=,; echo "${MNAMES[*]}")" 'BEGIN {split(names, nm, ",")}
			{printf "%s%s CPU %.1fs, read %.0f MiB, written %.0f MiB", (NR > 1 ? "; " : ""), nm[NR], $4 - $1, ($5 - $2) / 1048576, ($6 - $3) / 1048576}'
	}
	local m0 m1 m2
	m0=$(mstat)
	rollout 1
	local roll1=$ROLL cpuroll1=$CPU app1=$APPLIED
	local g1
	m1=$(mstat)
	g1=$(ingested)
	rollout 2
	local roll2=$ROLL cpuroll2=$CPU app2=$APPLIED g2
	m2=$(mstat)
	g2=$(ingested)
	sleep 1.5
	local rss2=() hwm=()
	for p in "${CTLS[@]}"; do rss2+=("$(rss_of "$p")") hwm+=("$(hwm_of "$p")"); done
	local label="one controller (bbolt)"
	[ "$nctl" -ge 2 ] && label="two controllers on a ${FLEET_ETCD:-1}-member etcd"
	local topo="one mosquitto"
	[ "$edges" -gt 0 ] && topo="$edges edge mosquittos bridged (mutual TLS) to a core"
	echo "== tender serve --broker mosquitto, $label, $N devices in $sims simulator processes, mutual TLS, $topo"
	for k in $(seq "$sims"); do echo "   sim $k${eurls:+ (edge $(((k - 1) % edges + 1)))}: $(grep -m1 '^enrolled' "${logs[$((k - 1))]}"); $(grep -m1 '^connected' "${logs[$((k - 1))]}")"; done
	echo "   from starting the simulators: every simulator connected after $(secs "$tsims" "$tconn")s (enrollment included), all $N online at the controller after $(secs "$tsims" "$tonline")s"
	for b in "${bursts[@]}"; do echo "   burst (every device reports once): $b"; done
	echo "   apply version 1 (first install) -> succeeded, every device reporting it: ${roll1}s (apply answered in ${app1}s), controller CPU ${cpuroll1}s"
	echo "      brokers over it: $(mdelta "$m0" "$m1")"
	echo "   apply version 2 (waves 1%, 10%, 100%) -> succeeded, every device reporting it: ${roll2}s (apply answered in ${app2}s), controller CPU ${cpuroll2}s; $((g2 - g1)) reports ingested meanwhile"
	echo "      brokers over it: $(mdelta "$m1" "$m2")"
	i=0
	for p in "${CTLS[@]}"; do
		echo "   controller $((i + 1)) RSS: $(mib "${rss0[$i]}") idle, $(mib "${rss1[$i]}") connected ($(((rss1[i] - rss0[i]) / N)) bytes per device, $(mib $(((rss1[i] - rss0[i]) * 10000 / N))) per 10,000), $(mib "${rss2[$i]}") after the rollouts, peak $(mib "${hwm[$i]}"); CPU ${cpu1[$i]}s up to all connected"
		i=$((i + 1))
	done
	i=0
	for p in "${MPIDS[@]}"; do
		echo "   mosquitto ${MNAMES[$i]} RSS $(mib "$(rss_of "$p")"), peak $(mib "$(hwm_of "$p")"), CPU $(cpu_of "$p")s; open files $(ls /proc/$p/fd | wc -l)"
		i=$((i + 1))
	done
	for p in "${ETCDS[@]}"; do echo "   etcd member RSS $(mib "$(rss_of "$p")"), CPU $(cpu_of "$p")s"; done
	for k in $(seq "$sims"); do
		echo "   sim $k RSS $(mib "$(rss_of "${sp[$((k - 1))]}")"); $(grep '^{' "${logs[$((k - 1))]}" | tail -1 | python3 -c 'import json,sys; s=json.load(sys.stdin); l=s["latency"]; print("verified %d refused %d reports %d connect errors %d disconnects %d; issuedAt->report p50 %.0fms p99 %.0fms max %.0fms" % (s["verified"], s["refused"], s["reports"], s["connectErrors"], s["disconnects"], l["p50"]/1e6, l["p99"]/1e6, l["max"]/1e6))')"
	done
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	PIDS=()
}

PUSH=$PWD/build/pushimage
if [[ " $BROKERS " == *" serve "* || " $BROKERS " == *" ctl-mosquitto "* ]]; then
	CGO_ENABLED=0 go build -o build/tender ./cmd/tender
	CGO_ENABLED=0 go build -o "$PUSH" ./test/bench/pushimage
	[ -f build/testimage.tar ] || make testimage >/dev/null
fi

for B in $BROKERS; do
	case $B in
	serve)
		run_serve "$B"
		continue
		;;
	ctl-mosquitto)
		run_ctl_mosquitto
		continue
		;;
	esac
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
