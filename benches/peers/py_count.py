"""The bare peer: a confluent-kafka consumer that only counts records, the floor any
consumer of the topic pays for librdkafka and the broker. Batched consume, no parsing.

usage: py_count.py BROKERS TOPIC N GROUP
  -> one JSON line: {"rate": records/s from the first record to the Nth,
                     "cpu_s": process CPU seconds, "rss_mib": peak RSS}
"""
import json
import resource
import sys
import time

from confluent_kafka import Consumer


def main():
    brokers, topic, n, group = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    c = Consumer({
        "bootstrap.servers": brokers,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 2000,
        "heartbeat.interval.ms": 500,
    })
    c.subscribe([topic])
    seen, first = 0, None
    while seen < n:
        for m in c.consume(10000, 0.5):
            if m.error():
                continue
            if first is None:
                first = time.perf_counter()
            seen += 1
    elapsed = time.perf_counter() - first
    c.close()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"rate": (n - 1) / elapsed, "cpu_s": ru.ru_utime + ru.ru_stime,
                      "rss_mib": ru.ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
