#!/usr/bin/env bash
# drill.sh: a failover drill against the compose lab (compose.yaml), from
# the host, with the image's own sbload.
#
#   deploy/compose/drill.sh [--kill NODE | --region R] [--users N] [--rate R] [--duration D]
#
# It waits until every running node of the lab answers /readyz, connects
# the drill's users over all of them (https://127.0.0.1:7101…7105, trusting
# lab/ca.pem), publishes to them and SIGKILLs, by default, the container of
# the node that owns the most drill users (--kill NODE: that node's;
# --region R: every container of region R). It prints sbload's report and,
# as its last line on stdout, one JSON object: users, affected, acked, lost,
# duplicated, gaps, out_of_order, resumed, continuity_lost, rto_p50_ms,
# rto_p99_ms, rto_max_ms, target and killed. It exits 0 exactly when
# nothing was lost, duplicated, gapped or out of order (and the kill
# happened); 1 otherwise, 2 on bad usage.
set -euo pipefail

usage() {
	cat >&2 <<'EOF'
usage: deploy/compose/drill.sh [--kill NODE | --region R] [--users N] [--rate R] [--duration D]
  default: 50 users, 200 messages/s for 15s, SIGKILL the container of the node
  owning the most drill users; --kill n3: sb-n3's; --region r2: every container of r2
EOF
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lab="$here/lab"

# The lab's nodes, their regions and host ports (compose.yaml).
nodes=(n1 n2 n3 n4 n5)
region_of() {
	case "$1" in
	n1 | n2) echo r1 ;;
	n3 | n4) echo r2 ;;
	n5) echo r3 ;;
	esac
}
port_of() { echo "710${1#n}"; }

kill_node="" region="" users=50 rate=200 duration=15s
while [ $# -gt 0 ]; do
	case "$1" in
	--kill) kill_node="${2:?--kill needs a node}"; shift 2 ;;
	--kill=*) kill_node="${1#*=}"; shift ;;
	--region) region="${2:?--region needs a region}"; shift 2 ;;
	--region=*) region="${1#*=}"; shift ;;
	--users) users="${2:?--users needs a number}"; shift 2 ;;
	--users=*) users="${1#*=}"; shift ;;
	--rate) rate="${2:?--rate needs a number}"; shift 2 ;;
	--rate=*) rate="${1#*=}"; shift ;;
	--duration) duration="${2:?--duration needs a duration}"; shift 2 ;;
	--duration=*) duration="${1#*=}"; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "drill.sh: unknown argument $1" >&2; usage; exit 2 ;;
	esac
done
if [ -n "$kill_node" ] && [ -n "$region" ]; then
	echo "drill.sh: give --kill or --region, not both" >&2
	exit 2
fi

for tool in docker curl; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "drill.sh: $tool is required" >&2
		exit 1
	fi
done
for f in ca.pem token-secret api-key admin-key; do
	if [ ! -r "$lab/$f" ]; then
		echo "drill.sh: cannot read $lab/$f: is the lab up? (docker compose -f $here/compose.yaml up -d)" >&2
		exit 1
	fi
done

running=()
for n in "${nodes[@]}"; do
	if [ "$(docker inspect -f '{{.State.Running}}' "sb-$n" 2>/dev/null)" = true ]; then
		running+=("$n")
	fi
done
if [ ${#running[@]} -lt 2 ]; then
	echo "drill.sh: ${#running[@]} lab nodes running (${running[*]:-none}); a drill needs at least 2: docker compose -f $here/compose.yaml up -d" >&2
	exit 1
fi
is_running() {
	local n
	for n in "${running[@]}"; do [ "$n" = "$1" ] && return 0; done
	return 1
}

# Every running node ready, within 3 minutes.
echo "drill.sh: waiting for ${running[*]} to be ready" >&2
deadline=$((SECONDS + 180))
for n in "${running[@]}"; do
	url="https://127.0.0.1:$(port_of "$n")/readyz"
	until curl -fsS --max-time 5 --cacert "$lab/ca.pem" -o /dev/null "$url" 2>/dev/null; do
		if [ $SECONDS -ge $deadline ]; then
			echo "drill.sh: $n ($url) not ready after 3 minutes: docker logs sb-$n" >&2
			exit 1
		fi
		sleep 1
	done
done

# What to kill. {node} is replaced by sbload with the target it chose.
killed=()
if [ -z "$kill_node" ] && [ -z "$region" ]; then
	target=auto
	kill_cmd='docker kill --signal KILL sb-{node}'
elif [ -n "$kill_node" ]; then
	if ! is_running "$kill_node"; then
		echo "drill.sh: --kill $kill_node: not a running lab node (running: ${running[*]})" >&2
		exit 2
	fi
	target="$kill_node"
	killed=("$kill_node")
	kill_cmd="docker kill --signal KILL sb-$kill_node"
else
	for n in "${running[@]}"; do
		[ "$(region_of "$n")" = "$region" ] && killed+=("$n")
	done
	if [ ${#killed[@]} -eq 0 ]; then
		echo "drill.sh: --region $region: no running lab node in it (running: ${running[*]})" >&2
		exit 2
	fi
	if [ ${#killed[@]} -eq ${#running[@]} ]; then
		echo "drill.sh: --region $region would kill every running node" >&2
		exit 2
	fi
	# The users' failover is measured from the region's first node; the
	# publisher's retries go to the others.
	target="${killed[0]}"
	kill_cmd="docker kill --signal KILL $(printf 'sb-%s ' "${killed[@]}")"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/switchboard-drill.XXXXXX")"
cid=""
cleanup() {
	if [ -n "$cid" ]; then docker rm -f "$cid" >/dev/null 2>&1 || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

# The image's own sbload, from the image the nodes run: a static Linux
# binary that runs on this host. Elsewhere (macOS), a Go toolchain builds it.
image="$(docker inspect -f '{{.Image}}' "sb-${running[0]}")"
if [ "$(uname -s)" = Linux ] && [ "$(uname -m)" = "$(docker image inspect -f '{{.Architecture}}' "$image" | sed 's/amd64/x86_64/;s/arm64/aarch64/')" ]; then
	cid="$(docker create "$image")"
	docker cp "$cid:/usr/local/bin/sbload" "$tmp/sbload" >/dev/null
	docker rm "$cid" >/dev/null
	cid=""
elif command -v go >/dev/null 2>&1; then
	(cd "$here/../.." && go build -o "$tmp/sbload" ./cmd/sbload)
else
	echo "drill.sh: the image's sbload does not run on this host and Go is missing to build it" >&2
	exit 1
fi

endpoints=""
for n in "${running[@]}"; do
	endpoints="${endpoints:+$endpoints,}https://127.0.0.1:$(port_of "$n")"
done

echo "drill.sh: $users users over ${running[*]}, $rate msg/s for $duration, then SIGKILL ${killed[*]:-the node owning the most users}" >&2
set +e
"$tmp/sbload" --scenario drill --endpoints "$endpoints" --ca-file "$lab/ca.pem" \
	--token-secret-file "$lab/token-secret" --api-key-file "$lab/api-key" --admin-key-file "$lab/admin-key" \
	--users "$users" --rate "$rate" --duration "$duration" \
	--target "$target" --kill-cmd "$kill_cmd" --json-out "$tmp/report.json"
code=$?
set -e
if [ ! -s "$tmp/report.json" ]; then
	echo "drill.sh: sbload failed (exit $code) without a report" >&2
	[ "$code" = 2 ] && exit 2 # sbload's bad usage: --users, --rate or --duration
	exit 1
fi

# sbload's report is indented JSON (Go's MarshalIndent): top-level fields
# at two spaces, objects' fields at four ("rto_ms.p99"). This reads them
# without jq, which many hosts lack.
field() {
	awk -v want="$1" '
	/^  "[^"]+": / {
		line = $0; sub(/^  "/, "", line)
		key = line; sub(/".*/, "", key)
		val = line; sub(/^[^"]*": /, "", val); sub(/,$/, "", val)
		obj = (val == "{") ? key : ""
		if (key == want) { print val; exit }
		next
	}
	/^  [}\]]/ { obj = ""; next }
	obj != "" && /^    "[^"]+": / {
		line = $0; sub(/^    "/, "", line)
		key = line; sub(/".*/, "", key)
		val = line; sub(/^[^"]*": /, "", val); sub(/,$/, "", val)
		if (obj "." key == want) { print val; exit }
	}' "$tmp/report.json"
}
num() {
	local v
	v="$(field "$1")"
	echo "${v:-0}"
}
# rto_p99_ms and its kin are top-level in newer reports; older ones have
# them only inside rto_ms.
rto() {
	local v
	v="$(field "rto_$1_ms")"
	[ -n "$v" ] || v="$(field "rto_ms.$1")"
	echo "${v:-0}"
}

target_id="$(field target)"
target_id="${target_id//\"/}"
if [ ${#killed[@]} -eq 0 ] && [ -n "$target_id" ]; then
	killed=("$target_id")
fi
trigger_error="$(field trigger_error)"
lost="$(num lost)" duplicated="$(num duplicated)" gaps="$(num gaps)" out_of_order="$(num out_of_order)"

if [ -n "$trigger_error" ]; then
	echo "drill.sh: the kill failed: $trigger_error" >&2
fi
echo
echo "killed: ${killed[*]:-none}. Bring it back with: docker start $(printf 'sb-%s ' "${killed[@]}")(or docker compose -f $here/compose.yaml up -d)"
printf '{"users":%s,"affected":%s,"acked":%s,"lost":%s,"duplicated":%s,"gaps":%s,"out_of_order":%s,"resumed":%s,"continuity_lost":%s,"rto_p50_ms":%s,"rto_p99_ms":%s,"rto_max_ms":%s,"target":"%s","killed":[%s]}\n' \
	"$(num users)" "$(num affected)" "$(num acked)" "$lost" "$duplicated" "$gaps" "$out_of_order" \
	"$(num resumed)" "$(num continuity_lost)" "$(rto p50)" "$(rto p99)" "$(rto max)" \
	"$target_id" "$(printf '"%s",' "${killed[@]}" | sed 's/,$//')"

if [ "$lost" = 0 ] && [ "$duplicated" = 0 ] && [ "$gaps" = 0 ] && [ "$out_of_order" = 0 ] && [ -z "$trigger_error" ] && [ "$code" = 0 ]; then
	exit 0
fi
exit 1
