#!/bin/bash
# Traces trivial Executes for half a second and prints where each round trip's time goes
# (bench/hops.py). Needs perf with syscall tracepoints, and root (or perf_event_paranoid <= 1).
#   bench/hop_trace.sh [target/release/qntx-python-plugin]
set -euo pipefail
BIN=${1:-target/release/qntx-python-plugin}
WORK=$(mktemp -d)
"$BIN" --port 0 --workers 2 > "$WORK/port" 2>/dev/null &
SUPERVISOR=$!
trap 'kill $SUPERVISOR 2>/dev/null; rm -rf "$WORK"' EXIT
until grep -q PORT "$WORK/port"; do sleep 0.05; done
ADDRESS=127.0.0.1:$(head -1 "$WORK/port" | cut -d= -f2)
target/release/examples/loadgen --address "$ADDRESS" --latency-only --calls 200 >/dev/null 2>&1
# The Execute phase of a long run: Metadata takes the first 1-4 s.
target/release/examples/loadgen --address "$ADDRESS" --latency-only --calls ${CALLS:-40000} >/dev/null 2>&1 &
CLIENT=$!
sleep ${AFTER:-4.2}
PIDS="$SUPERVISOR,$CLIENT"
for template in $(pgrep -P $SUPERVISOR); do
  for worker in $(pgrep -P "$template"); do PIDS="$PIDS,$worker"; done
done
perf record -q -o "$WORK/perf.data" -p "$PIDS" -e 'syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_exit_recvfrom,sched:sched_switch,sched:sched_wakeup' -- sleep 0.5
wait $CLIENT
perf script -i "$WORK/perf.data" -F comm,pid,tid,cpu,time,event,trace > "$WORK/trace.txt" 2>/dev/null
# The worker that served: the one writing answers on its work socket (fd 3's copy, 5 after dup).
WORKER=$(grep enter_sendto "$WORK/trace.txt" | grep -v " $SUPERVISOR/" | awk '{print $2}' | cut -d/ -f1 | sort | uniq -c | sort -rn | head -1 | awk '{print $2}')
python3 "$(dirname "$0")/hops.py" "$WORK/trace.txt" "$SUPERVISOR" "$WORKER" "$CLIENT"
