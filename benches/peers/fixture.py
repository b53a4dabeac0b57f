"""The records both peer benches use: the 10-week Globex fixture (`slatrack generate`)
copied `copies` times as tenants globex-0.. with unique event ids, in event-time order."""
import json
import os
import subprocess


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
