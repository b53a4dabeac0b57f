"""The process-level bench: `slatrack run` as a user runs it, alternated with another build.

    bash scripts/fetch-tansu.sh && bash scripts/build-release.sh
    python3 -m venv .tools/venv && .tools/venv/bin/pip install confluent-kafka==2.12.0
    SLATRACK_TANSU=.tools/tansu .tools/venv/bin/python benches/process.py --against REV \
        [--runs 5] [--traffic live|backfill] [--floor]

Setup, once per sitting: tansu (memory storage) on 127.0.0.1 and, per traffic shape
(`--traffic`, default both), one 4-partition topic of JSON delivery records (≈300 B each:
the 10-week Globex fixture copied as tenants globex-0.. until there are `--records`,
default 1,000,000, in event-time order, keyed by event id), plus one sentinel per
partition after the last record so every bucket closes:
- live: the records moved, in order and with their latencies, to the two hours ending
  ten minutes before the fill (tens of records per key-minute). Row 10's targets are for
  this shape (docs/testing.md, "The process bench's traffic").
- backfill: the fixture's own ten weeks (about one record per key-minute, so nearly
  every record opens and closes a bucket), the worst case.

Each round runs, in turn, the bare peer (benches/peers/py_count.py: confluent-kafka,
counting only) and both builds — this tree's release build (target/pgo/release/slatrack, from
scripts/build-release.sh) and REV's, built once into target/against/ the way REV builds
its releases — in alternating order. A slatrack run is the user's: the
default config plus a [kafka] section naming the topic (format json), a fresh SQLite
store, its own consumer group, the metrics listener on a free loopback port.

Measured per slatrack run, from outside the process:
- records/s: records over the busy span. The span starts at the first 40 ms in which
  the process spends over half a core after its first partition is assigned (joining a
  group is idle waiting) and ends at the last such 40 ms before the checkpoints in the
  store reach the end of every partition (the store is read every 100 ms, as a reader
  polling SQLite faster slows its writer; the CPU clock places the end within 40 ms).
- CPU-s per 1 M records: the process's user + system time when the checkpoints reach
  the end, over the records (start-up included).
- peak RSS: VmHWM when the checkpoints reach the end.
- on stderr, CPU seconds per thread, minor page faults, the kernel's share of the CPU
  seconds, the process's CPU seconds before its first assignment (start-up), and tansu's
  over the run (the peer's runs too).
Each run's figures are checked: the store's events must equal the topic's.
Printed: min / median / max over the runs for each build and for the peer, the medians'
ratios, and "bimodal" when a build's max rate is over 1.5x its min.

`--floor` also runs, each round, this tree's Kafka consumer alone (examples/consume_floor):
reading the records and nothing else, then reading and JSON-decoding them. What a
slatrack run spends beyond those is its own work.

`--profile OUT` instead runs this tree once under `perf record -g -a` (every thread of
the machine, tansu's too, 999 Hz) and writes the profile to OUT, for `perf report -i OUT`.
"""
import argparse
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone

from confluent_kafka import Producer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
import fixture  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPIC = "deliveries"  # one per traffic shape: deliveries-live, deliveries-backfill
PARTITIONS = 4  # --partitions
TICK = os.sysconf("SC_CLK_TCK")
BROKER_PID = None  # tansu's, for its CPU per run
WINDOW = 0.04  # seconds


def source_files():
    """The files a release build is made from."""
    for top in ("src", "proto"):
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            yield from (os.path.join(d, f) for f in files)
    yield from (os.path.join(ROOT, f) for f in ("Cargo.toml", "Cargo.lock", "build.rs"))


def build_against(rev):
    """REV's release binary, built once in its own worktree under target/against/, the way
    REV builds its releases: with its scripts/build-release.sh (profile-guided) where it
    has one, else `cargo build --release`."""
    sha = subprocess.run(["git", "rev-parse", "--verify", rev + "^{commit}"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    out = os.path.join(ROOT, "target", "against", sha[:12] + ".slatrack")
    if os.path.exists(out):
        return sha, out
    tree = os.path.join(ROOT, "target", "against", "tree-" + sha[:12])
    if not os.path.exists(tree):
        subprocess.run(["git", "worktree", "add", "--detach", tree, sha], cwd=ROOT, check=True)
    print(f"building {rev} ({sha[:12]}) in {tree} …", file=sys.stderr)
    if os.path.exists(os.path.join(tree, "scripts", "build-release.sh")):
        env = dict(os.environ, SLATRACK_PGO_DIR=os.path.join(ROOT, "target", "against", "pgo"))
        built = subprocess.run(["bash", "scripts/build-release.sh"], cwd=tree, env=env, check=True,
                               stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    else:
        env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(ROOT, "target", "against", "target"))
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "slatrack"], cwd=tree,
                       env=env, check=True)
        built = os.path.join(env["CARGO_TARGET_DIR"], "release", "slatrack")
    os.replace(built, out)
    return sha, out


LIVE_SPAN = timedelta(hours=2)
LIVE_END = timedelta(minutes=10)  # before the fill: within validation.max_future_skew all along


def retime_live(recs):
    """The records moved, in order and with their latencies, to the two hours ending ten
    minutes before now: live traffic's shape (tens of records per key-minute), as after a
    restart or a short outage, where the backfill shape has about one record per bucket.
    Timestamps are written to the millisecond, as most producers write them."""
    def ts(s):
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    first, last = ts(recs[0]["completed_at"]), ts(recs[-1]["completed_at"])
    scale = LIVE_SPAN / (last - first)
    start = datetime.now(timezone.utc) - LIVE_END - LIVE_SPAN
    for e in recs:
        done = ts(e["completed_at"])
        shift = start + (done - first) * scale - done
        for f in ("enqueued_at", "started_at", "completed_at"):
            e[f] = (ts(e[f]) + shift).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return recs


def create_topic(tansu, url, name, partitions):
    subprocess.run([tansu, "topic", "create", name, "--partitions", str(partitions), "--broker", url],
                   check=True, stdout=subprocess.DEVNULL)


def fill_topic(tansu, url, brokers, binary, tmp, n, traffic):
    create_topic(tansu, url, TOPIC, PARTITIONS)
    base = fixture.records(binary, tmp, 1)
    copies = -(-n // len(base))
    recs = fixture.records(binary, tmp, copies)[:n]
    if traffic == "live":
        recs = retime_live(recs)
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 20,
                  "queue.buffering.max.messages": 1000000})
    def send(v, **kw):
        while True:
            try:
                p.produce(TOPIC, v, **kw); return
            except BufferError:
                p.poll(0.05)
    size = 0
    for e in recs:
        v = json.dumps(e, separators=(",", ":")).encode()
        size += len(v)
        send(v, key=e["event_id"])
    last = datetime.fromisoformat(recs[-1]["completed_at"].replace("Z", "+00:00"))
    # Late enough to close every bucket (engine.allowed_lateness is 2 minutes), never
    # beyond now.
    last += timedelta(days=1) if traffic == "backfill" else LIVE_END - timedelta(minutes=1)
    stamp = last.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    for part in range(PARTITIONS):
        s = dict(recs[0]); s.update(tenant="zz-sentinel", event_id=f"sentinel-{part}", outcome="delivered",
                                    attempt=1, enqueued_at=stamp, started_at=stamp, completed_at=stamp)
        send(json.dumps(s, separators=(",", ":")).encode(), partition=part)
    if p.flush(300):
        raise SystemExit("the broker did not take every record: see its log")
    terminal = sum(1 for e in recs if e["outcome"] != "retrying")
    return len(recs) + PARTITIONS, size / len(recs), terminal


def parse_stat(raw):
    """A /proc stat line (a process's or a thread's): its CPU seconds, the kernel's share of
    them (system time) and its minor page faults (each a page zeroed or mapped)."""
    fields = raw.rsplit(")", 1)[1].split()
    user, system = int(fields[11]) / TICK, int(fields[12]) / TICK
    return {"cpu_s": user + system, "sys_s": system, "minflt": int(fields[7])}


def proc_stat(pid):
    """`parse_stat` of the process, from one read of /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        return parse_stat(f.read())


def proc_cpu_s(pid):
    return proc_stat(pid)["cpu_s"]


def proc_hwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
    return int(m.group(1)) / 1024


def threads_cpu_s(pid):
    """CPU seconds per thread name (threads of one name summed)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        out[name] = out.get(name, 0.0) + parse_stat(raw)["cpu_s"]
    return out


def run_slatrack(binary, brokers, n, terminal, tmp, tag, perf_out=None):
    work = tempfile.mkdtemp(dir=tmp, prefix=tag + "-")
    db, cfg, log = (os.path.join(work, x) for x in ("s.db", "slatrack.toml", "slatrack.log"))
    with open(cfg, "w") as f:
        f.write(f"""[store]\npath = "{db}"\n[metrics]\nlisten = "127.0.0.1:0"\n[kafka]\nbrokers = "{brokers}"
group_id = "{os.path.basename(work)}"\n[[kafka.topics]]\nname = "{TOPIC}"\nformat = "json"
[kafka.properties]\n"session.timeout.ms" = "2000"\n"heartbeat.interval.ms" = "500"\n""")
    broker_before = proc_cpu_s(BROKER_PID)
    with open(log, "w") as logf:
        svc = subprocess.Popen([binary, "run", "--config", cfg], stdout=logf, stderr=logf,
                               env=dict(os.environ, RUST_LOG="info", NO_COLOR="1"))
    perf = None
    if perf_out:
        # Sampled call stacks of the whole machine while the run lasts (`perf report -i OUT
        # --pid PID` or `--comm`): `-p PID` would miss the threads the process starts later.
        perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-a", "-o", perf_out],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []  # (t, cpu_s)
    assigned_at = None
    done = {}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                samples.append((time.perf_counter(), proc_cpu_s(svc.pid)))
            except (OSError, IndexError):
                return
            time.sleep(0.005)
    th = threading.Thread(target=sample, daemon=True); th.start()
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            if assigned_at is None:
                if "partition assigned" in open(log).read():
                    assigned_at = time.perf_counter()
                time.sleep(0.005)
                continue
            # Read the store rarely: a reader polling SQLite every few ms slows its writer.
            time.sleep(0.1)
            if fixture.checkpointed(db) >= n:
                done = {"t": time.perf_counter(), **proc_stat(svc.pid), "rss": proc_hwm_mib(svc.pid),
                        "threads": threads_cpu_s(svc.pid), "broker_s": proc_cpu_s(BROKER_PID) - broker_before}
                break
            if svc.poll() is not None:
                raise SystemExit(f"{tag}: slatrack exited {svc.returncode}; see {log}")
        else:
            raise SystemExit(f"{tag}: not done in 600 s; see {log}")
    finally:
        stop.set(); th.join()
        if perf:
            perf.send_signal(signal.SIGINT); perf.wait(60)
        svc.terminate(); svc.wait(60)
    # A sample ends a busy window when the process spent over half a core in the WINDOW
    # before it (CPU time comes in clock ticks of 10 ms: a window holds several).
    busy = []
    j = 0
    for t, c in samples:
        while samples[j][0] < t - WINDOW:
            j += 1
        if t - samples[j][0] >= WINDOW / 2 and (c - samples[j][1]) / (t - samples[j][0]) > 0.5:
            busy.append(t)
    start = next((t - WINDOW for t in busy if assigned_at is not None and t >= assigned_at), None)
    end = max((t for t in busy if t <= done["t"]), default=None)
    if start is None or end is None or end <= start:
        raise SystemExit(f"{tag}: no busy span found")
    con = sqlite3.connect(db)
    (events,) = con.execute("SELECT COALESCE(SUM(events), 0) FROM buckets WHERE tenant != 'zz-sentinel'").fetchone()
    con.close()
    if events != terminal:
        raise SystemExit(f"{tag}: the store counted {events} events, the topic holds {terminal}")
    startup_s = max((c for t, c in samples if t <= assigned_at), default=0.0)
    print(f"  {tag}: assigned→checkpointed {done['t'] - assigned_at:.2f} s, busy span "
          f"{start - assigned_at:+.2f} s .. {end - assigned_at:+.2f} s, {len(samples)} samples, "
          f"{startup_s:.3f} CPU-s before the first assignment, {done['minflt']} minor faults, "
          f"{done['sys_s']:.2f} of {done['cpu_s']:.2f} CPU-s in the kernel",
          file=sys.stderr)
    top = sorted(done["threads"].items(), key=lambda kv: -kv[1])[:5]
    print("    CPU-s by thread: " + ", ".join(f"{k} {v:.2f}" for k, v in top)
          + f"; the broker (tansu) {done['broker_s']:.2f}", file=sys.stderr)
    return {"rate": n / (end - start), "cpu_per_m": done["cpu_s"] / n * 1e6, "rss": done["rss"]}


def build_floor():
    """This tree's examples/consume_floor (release)."""
    subprocess.run(["cargo", "build", "--release", "--locked", "--example", "consume_floor"], cwd=ROOT,
                   check=True)
    return os.path.join(ROOT, "target", "release", "examples", "consume_floor")


def run_floor(binary, brokers, n, i, mode):
    """slatrack's consumer alone on the topic: `count` (records read, nothing else) or
    `decode` (each also decoded and validated)."""
    out = subprocess.run([binary, brokers, TOPIC, str(n), f"floor-{mode}-{i}-{os.getpid()}", mode],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    return {"rate": r["rate"], "cpu_per_m": r["cpu_s"] / n * 1e6, "rss": r["rss_mib"]}


def run_peer(brokers, n, tmp, i):
    broker_before = proc_cpu_s(BROKER_PID)
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benches/peers/py_count.py"), brokers, TOPIC,
                          str(n), f"peer-{i}-{os.getpid()}"], check=True, capture_output=True, text=True).stdout
    print(f"  peer-{i}: the broker (tansu) {proc_cpu_s(BROKER_PID) - broker_before:.2f} CPU-s", file=sys.stderr)
    r = json.loads(out)
    return {"rate": r["rate"], "cpu_per_m": r["cpu_s"] / n * 1e6, "rss": r["rss_mib"]}


def spread(vs, fmt):
    """min/median/max of `vs`, each formatted with `fmt`."""
    return "/".join(fmt.format(v) for v in (min(vs), statistics.median(vs), max(vs)))


def summary(name, runs):
    out = [f"{name:<26}"]
    for k, unit, fmt in (("rate", "M rec/s", "{:.2f}"), ("cpu_per_m", "CPU-s/1M", "{:.2f}"), ("rss", "MiB", "{:.0f}")):
        out.append(f"{unit} " + spread([r[k] / (1e6 if k == "rate" else 1) for r in runs], fmt))
    rates = [r["rate"] for r in runs]
    if max(rates) > 1.5 * min(rates):
        out.append("BIMODAL")
    return "  ".join(out)


def run_rounds(runs, brokers, n, terminal, tmp, floor, builds, traffic):
    """`runs` rounds on the current topic: the peer, the floor if asked, both builds in
    alternating order."""
    results = {"peer": [], "this": [], "against": []}
    if floor:
        results.update({"read": [], "decode": []})
    for i in range(runs):
        results["peer"].append(run_peer(brokers, n, tmp, i))
        if floor:
            for mode, key in (("count", "read"), ("decode", "decode")):
                results[key].append(run_floor(floor, brokers, n, i, mode))
        for name, binary in (builds if i % 2 == 0 else builds[::-1]):
            results[name].append(run_slatrack(binary, brokers, n, terminal, tmp, f"{traffic}-{name}-{i}"))
        print(f"round {i + 1}: " + "  ".join(f"{k} {v[-1]['rate'] / 1e6:.2f} M/s" for k, v in results.items()),
              flush=True)
    return results


def run_counted(binary, brokers, n, terminal, tmp, tag):
    """One run under callgrind (valgrind counts instructions, not time): instructions per
    record on the apply thread (the one that runs `apply_loop`) and over every thread. The
    apply thread's count moves by a few per cent with what follows the clock (batch sizes,
    checkpoints); the whole process's moves more, as idle polling depends on timing."""
    out = tempfile.mkdtemp(dir=tmp, prefix=tag + "-callgrind-")
    wrapper = os.path.join(out, "slatrack")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nexec valgrind --tool=callgrind --separate-threads=yes '
                f'--callgrind-out-file={out}/cg.%p "{binary}" "$@"\n')
    os.chmod(wrapper, 0o755)
    run_slatrack(wrapper, brokers, n, terminal, tmp, tag)
    apply, total = None, 0
    for name in os.listdir(out):
        if not name.startswith("cg."):
            continue
        with open(os.path.join(out, name), errors="replace") as f:
            text = f.read()
        m = re.search(r"^summary: (\d+)", text, re.M)
        count = int(m.group(1)) if m else 0
        total += count
        if "apply_loop" in text:
            apply = count
    if apply is None:
        raise SystemExit(f"{tag}: no thread ran apply_loop in {out} (a build without symbols?)")
    return {"apply": apply / n, "total": total / n}


def print_counted(name, runs):
    out = [f"{name:<26}"]
    for k, label in (("apply", "instructions/record, apply thread"), ("total", "all threads")):
        out.append(f"{label} " + spread([r[k] for r in runs], "{:.0f}"))
    print("  ".join(out))


def print_summaries(results, this, against):
    print(summary("python peer (count only)", results["peer"]))
    if "read" in results:
        print(summary("our consumer, reading", results["read"]))
        print(summary("our consumer, + decoding", results["decode"]))
    print(summary(this, results["this"]))
    print(summary(against, results["against"]))
    med = {k: statistics.median(r["rate"] for r in v) for k, v in results.items()}
    print(f"median rate: this / peer {med['this'] / med['peer']:.2f}, against / peer "
          f"{med['against'] / med['peer']:.2f}, this / against {med['this'] / med['against']:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--against", help="git rev to alternate with (built once)")
    ap.add_argument("--profile", metavar="OUT",
                    help="instead: one run of this tree under `perf record -g`, written to OUT")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--records", type=int, help="default 1,000,000 (200,000 with --instructions)")
    ap.add_argument("--partitions", type=int, default=4,
                    help="partitions of the topic (memory is bounded per partition: docs/operations.md)")
    ap.add_argument("--traffic", default="live,backfill",
                    type=lambda v: [t for t in v.split(",") if t in ("live", "backfill")] or ap.error(
                        "--traffic: live, backfill or both (comma-separated)"),
                    help="event times, one topic and set of rounds each (default both): moved to the "
                         "two hours before now (live: tens of records per key-minute; row 10's "
                         "targets), or the fixture's 10 weeks (backfill: about one record per "
                         "key-minute, so nearly every record opens and closes a bucket)")
    ap.add_argument("--floor", action="store_true",
                    help="also run this tree's consumer alone each round (examples/consume_floor: "
                         "reading only, and reading + JSON decoding): the client's share of a run")
    ap.add_argument("--instructions", action="store_true",
                    help="instead: count instructions per record under callgrind (default 200,000 "
                         "records): the host's load moves it far less than the wall-clock figures")
    ap.add_argument("--binary",
                    help="this tree's build (default target/pgo/release/slatrack, the release build: "
                         "bash scripts/build-release.sh)")
    a = ap.parse_args()
    if a.records is None:
        a.records = 200_000 if a.instructions else 1_000_000
    if a.binary is None:
        a.binary = os.path.join(ROOT, "target/pgo/release/slatrack")
        stale = [p for p in source_files() if os.path.getmtime(p) > os.path.getmtime(a.binary)] \
            if os.path.exists(a.binary) else None
        if stale is None or stale:
            ap.error(f"{a.binary} is " + ("missing" if stale is None else f"older than {stale[0]}")
                     + ": build this tree's release with `bash scripts/build-release.sh`")
    elif not os.path.exists(a.binary):
        ap.error(f"--binary {a.binary}: no such file")
    global PARTITIONS, TOPIC
    PARTITIONS = a.partitions
    tansu = os.environ["SLATRACK_TANSU"]
    head = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    if not a.against and not a.profile:
        ap.error("give --against REV (or --profile OUT)")
    sha, against = build_against(a.against) if a.against else ("", None)
    tmp = tempfile.mkdtemp(prefix="slatrack-bench-")
    broker, url, brokers = fixture.start_tansu(tansu, os.path.join(tmp, "tansu.log"))
    global BROKER_PID
    BROKER_PID = broker.pid
    print(f"work dir {tmp}", file=sys.stderr)
    try:
        create_topic(tansu, url, "slatrack-quarantine", 1)
        floor = build_floor() if a.floor and not a.profile else None
        for traffic in a.traffic:
            TOPIC = f"deliveries-{traffic}"
            n, avg, terminal = fill_topic(tansu, url, brokers, a.binary, tmp, a.records, traffic)
            if a.profile:
                r = run_slatrack(a.binary, brokers, n, terminal, tmp, "profile", perf_out=a.profile)
                print(f"profiled run ({traffic}): {r['rate'] / 1e6:.2f} M rec/s (perturbed by perf), "
                      f"{a.profile}")
                return
            if a.instructions:
                print(f"{n} JSON records (≈{avg:.0f} B, {traffic} traffic) in {PARTITIONS} partitions; "
                      f"{a.runs} runs of each build under callgrind")
                for name, label, binary in (("this", f"this tree ({head})", a.binary),
                                            ("against", f"against {a.against} ({sha[:9]})", against)):
                    print_counted(label, [run_counted(binary, brokers, n, terminal, tmp, f"{traffic}-{name}-{i}")
                                          for i in range(a.runs)])
                continue
            print(f"{n} JSON records (≈{avg:.0f} B, {traffic} traffic) in {PARTITIONS} partitions; "
                  f"{a.runs} alternated rounds")
            results = run_rounds(a.runs, brokers, n, terminal, tmp, floor,
                                 [("this", a.binary), ("against", against)], traffic)
            print_summaries(results, f"this tree ({head})", f"against {a.against} ({sha[:9]})")
    finally:
        broker.kill()


if __name__ == "__main__":
    main()
