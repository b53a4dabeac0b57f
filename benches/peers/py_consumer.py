"""The consumer a team would otherwise write: confluent-kafka + hdrhistogram computing the
same per-(tenant, platform) numbers as slatrack (docs/engine.md "Definitions": events = terminal
records, on time = delivered within the platform's target end to end, latency of every
attempt in an HDR histogram, 2 significant digits). Kept short and fair: batched consume,
no dedup (slatrack dedups, so this favours the peer), no windows, no store.

usage: py_consumer.py BROKERS TOPIC N  -> prints one JSON line with the numbers and rate
"""
import json
import sys
import time
from datetime import datetime

from confluent_kafka import Consumer
from hdrh.histogram import HdrHistogram

TARGET_US = {"impact_in": 300_000}
DEFAULT_TARGET_US = 500_000


def micros(ts):
    d = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return int(d.timestamp()) * 1_000_000 + d.microsecond


def absorb(stats, raw):
    """The per-event work: parse, then the README definitions, into `stats`."""
    e = json.loads(raw)
    if e["tenant"] == "zz-sentinel":
        return
    key = (e["tenant"], e["platform"])
    s = stats.get(key)
    if s is None:
        s = stats[key] = {"attempts": 0, "events": 0, "on_time": 0,
                          "h": HdrHistogram(1, 3_600_000_000, 2)}
    enq, start, done = micros(e["enqueued_at"]), micros(e["started_at"]), micros(e["completed_at"])
    s["attempts"] += 1
    s["h"].record_value(min(max(done - start, 1), 3_600_000_000))
    if e["outcome"] in ("delivered", "failed", "dead_lettered"):
        s["events"] += 1
        target = TARGET_US.get(e["platform"], DEFAULT_TARGET_US)
        if e["outcome"] == "delivered" and done - enq <= target:
            s["on_time"] += 1


def numbers(stats):
    return {f"{t}/{p}": {"attempts": s["attempts"], "events": s["events"], "on_time": s["on_time"],
                         "p99_ms": s["h"].get_value_at_percentile(99) / 1000}
            for (t, p), s in sorted(stats.items())}


def main():
    brokers, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    c = Consumer({
        "bootstrap.servers": brokers,
        "group.id": "py-peer",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 2000,
        "heartbeat.interval.ms": 500,
    })
    c.subscribe([topic])
    stats = {}
    seen, first = 0, None
    while seen < n:
        for m in c.consume(10000, 0.5):
            if m.error():
                continue
            if first is None:
                first = time.perf_counter()
            seen += 1
            absorb(stats, m.value())
    elapsed = time.perf_counter() - first
    c.close()
    out = numbers(stats)
    print(json.dumps({"rate": (n - 1) / elapsed, "numbers": out}))


if __name__ == "__main__":
    main()
