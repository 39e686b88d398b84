"""Per-hop medians of trivial Executes, from a `perf script` trace that bench/hop_trace.sh takes.

    python3 bench/hops.py TRACE.txt SUPERVISOR_PID WORKER_PID LOADGEN_PID

A cycle is read from the socket system calls of the three processes: the client writes the
request (A), the supervisor reads it (B) and sends it to the worker (C), the worker reads it
(D) and writes the answer (E), the supervisor reads that (F) and writes the response (G), and
the client reads it (H). The times are those of the traced calls; tracing adds a little to
each, so the sum is somewhat above an untraced round trip.
"""

import statistics
import sys

HOPS = [
    ("A", "B", "client's request -> supervisor has read it"),
    ("B", "C", "supervisor: request -> sent to the worker"),
    ("C", "D", "work socket -> worker has read it"),
    ("D", "E", "worker: request read -> answer written (the run)"),
    ("E", "F", "work socket -> supervisor has read the answer"),
    ("F", "G", "supervisor: answer -> response written"),
    ("G", "H", "TCP -> client has read the response"),
    ("H", "A", "client: response -> next request written"),
]


def events(path, supervisor, worker, client):
    with open(path) as trace:
        for line in trace:
            parts = line.split()
            if len(parts) < 6 or "/" not in parts[1]:
                continue
            pid = parts[1].split("/")[0]
            time = float(parts[3].rstrip(":")) * 1e6
            event = parts[4].rstrip(":")
            value = parts[5] if len(parts) > 5 else ""
            positive = event.endswith("exit_recvfrom") and not value.startswith("0xffff")
            if pid == client and event.endswith("enter_writev"):
                yield "A", time
            elif pid == client and positive:
                yield "H", time
            elif pid == supervisor and event.endswith("enter_sendto"):
                yield "C", time
            elif pid == supervisor and event.endswith("enter_writev"):
                yield "G", time
            elif pid == supervisor and positive:
                yield "BF", time
            elif pid == worker and positive:
                yield "D", time
            elif pid == worker and event.endswith("enter_sendto"):
                yield "E", time


def cycles(stream):
    """Complete cycles: each mark's first time after the previous mark's."""
    order = "ABCDEFGH"
    at, marks = 0, {}
    for kind, time in stream:
        want = order[at]
        if want in kind or (kind == "BF" and want in "BF"):
            marks[want] = time
            at += 1
            if at == len(order):
                yield marks
                at, marks = 0, {}
        elif kind == "A" and at > 0 and want != "A":
            at, marks = 1, {"A": time}  # lost track: start again at this request


def main():
    path, supervisor, worker, client = sys.argv[1:5]
    complete = list(cycles(events(path, supervisor, worker, client)))
    if len(complete) < 2:
        raise SystemExit("no complete cycles in the trace")
    print(f"{len(complete)} cycles; medians in microseconds")
    total = 0.0
    for start, end, label in HOPS:
        if end == "A":
            spans = [b["A"] - a["H"] for a, b in zip(complete, complete[1:])]
        else:
            spans = [c[end] - c[start] for c in complete]
        median = statistics.median(spans)
        total += median
        print(f"| {label} | {median:.0f} |")
    print(f"| sum of the medians | {total:.0f} |")


if __name__ == "__main__":
    main()
