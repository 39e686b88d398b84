"""Execute against Metadata from a Python gRPC client, as a Python host or script sees them.

The Rust load generator (examples/loadgen) measures the same pair from a Rust client. A Python
client spends far more of each call in itself, so the same plugin shows a smaller ratio here;
both are reported in docs/benchmark.md.

    python bench/python_client.py --address 127.0.0.1:PORT [--calls 3000] [--rounds 3]

Needs grpcio and grpcio-tools (pip); the stubs are generated from proto/ into a temporary
directory at start.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROTO = Path(__file__).resolve().parent.parent / "proto"
TRIVIAL = "x = 1 + 1"


def load_stubs(into):
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}", f"--python_out={into}",
         f"--grpc_python_out={into}", "domain.proto", "python.proto"],
        check=True,
    )
    sys.path.insert(0, str(into))
    import domain_pb2, domain_pb2_grpc, python_pb2, python_pb2_grpc  # noqa: E401

    return domain_pb2, domain_pb2_grpc, python_pb2, python_pb2_grpc


def percentile(sorted_samples, p):
    rank = max(1, min(len(sorted_samples), round(p * len(sorted_samples) + 0.5)))
    return sorted_samples[rank - 1]


def timed(call, n):
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return percentile(samples, 0.50), percentile(samples, 0.99)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import grpc

    with tempfile.TemporaryDirectory() as stubs:
        domain_pb2, domain_grpc, python_pb2, python_grpc = load_stubs(Path(stubs))
        channel = grpc.insecure_channel(args.address)
        domain = domain_grpc.DomainPluginServiceStub(channel)
        python = python_grpc.PythonServiceStub(channel)
        empty = domain_pb2.Empty()
        request = python_pb2.PythonExecuteRequest(code=TRIVIAL)

        def execute():
            reply = python.Execute(request)
            if not reply.success:
                raise SystemExit(f"Execute failed: {reply.error}")

        print(f"{'round':>5} {'Metadata p50':>13} {'p99':>8} {'Execute p50':>12} {'p99':>8}"
              f" {'ratio p50':>10} {'p99':>6}   (µs)")
        for round_ in range(1, args.rounds + 1):
            warm = max(20, args.calls // 10)
            timed(lambda: domain.Metadata(empty), warm)
            m50, m99 = timed(lambda: domain.Metadata(empty), args.calls)
            timed(execute, warm)
            e50, e99 = timed(execute, args.calls)
            print(f"{round_:>5} {m50:>13.0f} {m99:>8.0f} {e50:>12.0f} {e99:>8.0f}"
                  f" {e50 / m50:>10.2f} {e99 / m99:>6.2f}")


if __name__ == "__main__":
    main()
