#!/usr/bin/env bash
# usage: bench-broadcast.sh NODES SUBSCRIBERS CHANNELS RATE DURATION [extra sbload args]
# Starts NODES switchboard processes (n1 bootstraps), runs sbload --scenario broadcast, prints its JSON.
set -euo pipefail
N=$1; S=$2; C=$3; R=$4; D=$5; shift 5
# Binaries: $BIN if set, else built from this checkout.
W=$(mktemp -d /tmp/bcast.XXXX)
B=${BIN:-$W/bin}
if [ -z "${BIN:-}" ]; then
  (cd "$(dirname "$0")/.." && go build -o "$B/switchboard" ./cmd/switchboard && go build -o "$B/sbload" ./cmd/sbload)
fi
echo secret-token > $W/tok; echo api-key > $W/api; echo admin-key > $W/adm
base=25800
pids=(); eps=(); pidarg=()
for i in $(seq 1 $N); do
  p=$((base + i*10))
  join="--bootstrap"; [ $i -gt 1 ] && join="--join 127.0.0.1:$((base+12))"
  zone=$(printf "\\x$(printf %x $((96+i)))")
  $B/switchboard --node-id n$i --region r1 --zone $zone --data-dir $W/n$i \
    --public-addr 127.0.0.1:$p --cluster-addr 127.0.0.1:$((p+1)) --gossip-addr 127.0.0.1:$((p+2)) $join \
    --token-secret-file $W/tok --api-key-file $W/api --admin-key-file $W/adm > $W/n$i.log 2>&1 &
  pids+=($!); eps+=("http://127.0.0.1:$p"); pidarg+=("n$i=$!")
done
trap 'kill ${pids[*]} 2>/dev/null; wait 2>/dev/null; rm -rf $W' EXIT
for e in "${eps[@]}"; do
  for t in $(seq 1 100); do curl -sf $e/readyz >/dev/null && break; sleep 0.2; done
done
sleep 2
ulimit -n 20000
$B/sbload --scenario broadcast --endpoints $(IFS=,; echo "${eps[*]}") --api-key api-key --admin-key admin-key \
  --token-secret secret-token --users $S --channels $C --rate $R --duration $D --grace 30s \
  --pids $(IFS=,; echo "${pidarg[*]}") "$@"
