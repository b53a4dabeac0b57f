"""slatrack vs the Python peer on the same JSON topic on tansu, back to back.

    bash scripts/fetch-tansu.sh && cargo build --release
    .tools/venv/bin/pip install confluent-kafka==2.12.0 hdrhistogram==0.10.3
    SLATRACK_TANSU=.tools/tansu .tools/venv/bin/python benches/peers/compare.py [COPIES]

The 10-week Globex fixture (`slatrack generate`) is copied COPIES times (default 32) as
tenants globex-0.. with unique ids, merged in event-time order, produced as JSON to a
4-partition topic keyed by event id, plus one sentinel per partition a day later so every
bucket closes. Both consumers read all of it; their per-(tenant, platform) attempts,
events and on-time counts must be equal, and P99 within 1 %; rates from the first record.
"""
import json, os, sqlite3, subprocess, sys, tempfile, time
from datetime import datetime, timedelta
from confluent_kafka import Producer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target/release/slatrack")
TANSU = os.environ["SLATRACK_TANSU"]
COPIES = int(sys.argv[1]) if len(sys.argv) > 1 else 32


def main():
    tmp = tempfile.mkdtemp()
    broker, url, brokers = fixture.start_tansu(TANSU)
    procs = [broker]
    try:
        for t, n in (("peer", "4"), ("slatrack-quarantine", "1")):
            subprocess.run([TANSU, "topic", "create", t, "--partitions", n, "--broker", url], check=True,
                           stdout=subprocess.DEVNULL)
        recs = fixture.records(BIN, tmp, COPIES)
        p = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "queue.buffering.max.messages": 1000000})
        for e in recs:
            while True:
                try:
                    p.produce("peer", json.dumps(e, separators=(",", ":")).encode(), key=e["event_id"]); break
                except BufferError:
                    p.poll(0.05)
        last = datetime.fromisoformat(recs[-1]["completed_at"].replace("Z", "+00:00")) + timedelta(days=1)
        stamp = last.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        for part in range(4):
            s = dict(recs[0]); s.update(tenant="zz-sentinel", event_id=f"sentinel-{part}", outcome="delivered",
                                        attempt=1, enqueued_at=stamp, started_at=stamp, completed_at=stamp)
            p.produce("peer", json.dumps(s).encode(), partition=part)
        p.flush(120)
        n = len(recs) + 4
        print(f"{n} JSON records ({COPIES} tenants x the 10-week Globex fixture) in 4 partitions")

        peer = json.loads(subprocess.run([sys.executable, os.path.join(ROOT, "benches/peers/py_consumer.py"),
                                          brokers, "peer", str(n)], check=True, capture_output=True,
                                         text=True).stdout)

        db = os.path.join(tmp, "s.db")
        cfg = os.path.join(tmp, "slatrack.toml")
        open(cfg, "w").write(f"""[store]\npath = "{db}"\n[service]\ncheckpoint_interval = "100ms"\n[metrics]\nlisten = ""\n[kafka]\nbrokers = "{brokers}"\ngroup_id = "slatrack-peer"\n[[kafka.topics]]\nname = "peer"\nformat = "json"\n[kafka.properties]\n"session.timeout.ms" = "2000"\n"heartbeat.interval.ms" = "500"\n""")
        svc = subprocess.Popen([BIN, "run", "--config", cfg], stderr=subprocess.DEVNULL)
        procs.append(svc)

        # Progress from the store's checkpoints (sum of next offsets, every 100 ms), not from
        # /metrics: scraping at this rate would itself load the service (a scrape renders
        # every key's gauges under the telemetry lock the apply thread also takes).
        first = None
        while True:
            r = fixture.checkpointed(db)
            if r > 0 and first is None:
                first = time.perf_counter()
            if r >= n:
                break
            time.sleep(0.005)
        rate = (n - 1) / (time.perf_counter() - first)
        svc.terminate(); svc.wait(60)

        con = sqlite3.connect(db)
        ours = {f"{t}/{p}": {"attempts": a, "events": e, "on_time": o} for t, p, a, e, o in con.execute(
            "SELECT tenant, platform, SUM(attempts), SUM(events), SUM(on_time) FROM buckets "
            "WHERE tenant != 'zz-sentinel' GROUP BY tenant, platform")}
        theirs = {k: {x: v[x] for x in ("attempts", "events", "on_time")} for k, v in peer["numbers"].items()}
        assert ours == theirs, "per-(tenant, platform) counts differ"
        sc = json.loads(subprocess.run([BIN, "scorecard", "--tenant", "globex-0", "--from", "2025-09-01",
                                        "--to", "2025-12-01", "--format", "json", "--store", db], check=True,
                                       capture_output=True, text=True).stdout)
        for pl in sc["platforms"]:
            if pl["events"] == 0:
                continue
            theirs_p99 = peer["numbers"][f"globex-0/{pl['platform']}"]["p99_ms"]
            assert abs(pl["p99_ms"] - theirs_p99) <= 0.01 * theirs_p99 + 1e-9, (pl["platform"], pl["p99_ms"], theirs_p99)
        print(f"same numbers: {len(ours)} (tenant, platform) keys, counts equal, P99 within 1 %")
        print(f"python peer (confluent-kafka + hdrhistogram): {peer['rate']:>10.0f} records/s")
        print(f"slatrack run (JSON, SQLite store):            {rate:>10.0f} records/s")
        print(f"ratio slatrack / peer = {rate / peer['rate']:.1f}")
    finally:
        for pr in procs:
            pr.kill()


main()
