"""slatrack's JSON path against the Python peer's per-event work, in process, same lines.

    cargo build --release
    .tools/venv/bin/pip install hdrhistogram==0.10.3
    .tools/venv/bin/python benches/peers/inprocess.py [COPIES]

No broker: the end-to-end comparison (compare.py) is capped by what tansu and librdkafka
can serve on this machine, so this one compares the work per event itself. The 10-week
Globex fixture (`slatrack generate`) is copied COPIES times (default 8) as tenants
globex-0.., in event-time order, and written as JSON lines. The peer's `absorb` (the same
function `py_consumer.py` runs per message) reads them from a list in memory; slatrack's
engine bench times decode + validate + aggregate (closed buckets drained) on the same file
(`SLATRACK_BENCH_JSONL`). Five runs each; the ratio is of the medians.
"""
import json, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture  # noqa: E402
from py_consumer import absorb  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target/release/slatrack")
COPIES = int(sys.argv[1]) if len(sys.argv) > 1 else 8
RUNS = 5


def main():
    tmp = tempfile.mkdtemp()
    recs = fixture.records(BIN, tmp, COPIES)
    lines = [json.dumps(e, separators=(",", ":")).encode() for e in recs]
    path = os.path.join(tmp, "lines.jsonl")
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    n = len(lines)
    print(f"{n} JSON lines ({COPIES} tenants x the 10-week Globex fixture)")

    py = []
    for _ in range(RUNS):
        stats = {}
        t = time.perf_counter()
        for raw in lines:
            absorb(stats, raw)
        py.append(n / (time.perf_counter() - t))
    py.sort()

    out = subprocess.run(["cargo", "bench", "--locked", "--bench", "engine"], cwd=ROOT, check=True,
                         capture_output=True, text=True,
                         env=dict(os.environ, SLATRACK_BENCH_JSONL=path, SLATRACK_BENCH_RUNS=str(RUNS))).stdout
    line = next(l for l in out.splitlines() if l.startswith("JSON lines file"))
    lo, med, hi = (float(x) for x in line.split()[-8:-5])
    ours = [1e9 / hi, 1e9 / med, 1e9 / lo]
    print(f"python peer absorb(), in process    min/median/max {py[0]:>10.0f} / {py[RUNS // 2]:>10.0f} / {py[-1]:>10.0f} events/s")
    print(f"slatrack JSON path, in process      min/median/max {ours[0]:>10.0f} / {ours[1]:>10.0f} / {ours[2]:>10.0f} events/s")
    print(f"ratio of medians slatrack / peer = {ours[1] / py[RUNS // 2]:.1f}  (target >= 20)")


main()
