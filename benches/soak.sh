#!/usr/bin/env bash
# Soak: `slatrack run` (release) on tansu under steady `slatrack generate` traffic for
# SOAK_MINUTES (default 30), sampling every 10 s the service's RSS, open file descriptors,
# records read and watermark delay. Prints the samples and the RSS / fd slopes after a
# warm-up (the first third), by least squares. Not part of CI.
#
#   cargo build --release && SLATRACK_TANSU=.tools/tansu bash benches/soak.sh
#
# SOAK_MINUTES, SOAK_RATE (records/s, default 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${SLATRACK_TANSU:?run scripts/fetch-tansu.sh and export SLATRACK_TANSU}"
MINUTES=${SOAK_MINUTES:-30}
RATE=${SOAK_RATE:-2000}
BIN=target/release/slatrack
dir=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
KP=$(port); MP=$(port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

"$SLATRACK_TANSU" broker --listener-url "tcp://127.0.0.1:$KP" --advertised-listener-url "tcp://127.0.0.1:$KP" \
  --storage-engine memory://tansu/ >"$dir/tansu.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$KP) 2>/dev/null && break; sleep 0.1; done
"$SLATRACK_TANSU" topic create deliveries --partitions 4 --broker "tcp://127.0.0.1:$KP" >/dev/null
"$SLATRACK_TANSU" topic create slatrack-quarantine --partitions 1 --broker "tcp://127.0.0.1:$KP" >/dev/null

cat >"$dir/slatrack.toml" <<EOF
[store]
path = "$dir/soak.db"
[metrics]
listen = "127.0.0.1:$MP"
[kafka]
brokers = "127.0.0.1:$KP"
group_id = "soak"
[[kafka.topics]]
name = "deliveries"
[kafka.properties]
"session.timeout.ms" = "6000"
EOF
"$BIN" run --config "$dir/slatrack.toml" 2>"$dir/run.log" &
svc=$!; pids+=($svc)
"$BIN" generate --brokers "127.0.0.1:$KP" --topic deliveries --rate "$RATE" \
  --scenario late-and-duplicates 2>"$dir/generate.log" &
pids+=($!)

metric() { # sum of a metric's samples on /metrics
  { exec 3<>/dev/tcp/127.0.0.1/$MP && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3; } 2>/dev/null \
    | awk -v m="$1" '$1 ~ "^"m"({|$)" {s += $NF} END {printf "%.0f", s}'
}
echo "soak: ${MINUTES} min at ${RATE} records/s; sample every 10 s"
printf '%6s %10s %5s %12s %14s\n' sec rss_kib fds records watermark_lag_s
start=$(date +%s)
: >"$dir/samples"
while [ $(( $(date +%s) - start )) -lt $(( MINUTES * 60 )) ]; do
  sleep 10
  t=$(( $(date +%s) - start ))
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$svc/status")
  fds=$(ls "/proc/$svc/fd" | wc -l)
  recs=$(metric slatrack_records_total)
  wm=$( { exec 3<>/dev/tcp/127.0.0.1/$MP && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3; } 2>/dev/null \
    | awk -v now="$(date +%s)" '/^slatrack_watermark_timestamp_seconds/ {d = now - $NF; if (d > m) m = d} END {printf "%.0f", m}')
  printf '%6d %10d %5d %12s %14s\n' "$t" "$rss" "$fds" "$recs" "$wm" | tee -a "$dir/samples"
done
awk -v warm=$(( MINUTES * 20 )) '
  $1 >= warm { n++; x += $1; y += $2; xx += $1*$1; xy += $1*$2; f += $3; ff += $3*$1 }
  END {
    if (n < 2) { print "not enough samples"; exit }
    b = (n*xy - x*y) / (n*xx - x*x); bf = (n*ff - x*f) / (n*xx - x*x)
    printf "after warm-up (%d samples): RSS slope %.2f KiB/min, fd slope %.3f /min\n", n, b*60, bf*60
  }' "$dir/samples"
