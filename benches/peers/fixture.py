"""The records both peer benches use: the 10-week Globex fixture (`slatrack generate`)
copied `copies` times as tenants globex-0.. with unique event ids, in event-time order."""
import json
import os
import sqlite3
import subprocess


def checkpointed(db):
    """Records covered by a SQLite store's checkpoints (sum of next offsets; 0 while the
    store is not there yet)."""
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        (v,) = c.execute("SELECT COALESCE(SUM(next_offset), 0) FROM checkpoints").fetchone()
        c.close()
        return v
    except sqlite3.Error:
        return 0


def records(bin_path, tmp, copies):
    path = os.path.join(tmp, "globex.jsonl")
    subprocess.run([bin_path, "generate", "--output", path], check=True, stderr=subprocess.DEVNULL)
    base = [json.loads(l) for l in open(path) if l.strip()]
    recs = []
    for k in range(copies):
        for e in base:
            c = dict(e); c["tenant"] = f"globex-{k}"; c["event_id"] = f"{k}-{e['event_id']}"
            recs.append(c)
    recs.sort(key=lambda e: e["completed_at"])
    return recs
