"""The records both peer benches use: the 10-week Globex fixture (`slatrack generate`)
copied `copies` times as tenants globex-0.. with unique event ids, in event-time order."""
import json
import os
import socket
import sqlite3
import subprocess
import time


def start_tansu(tansu, log=None):
    """tansu (memory storage) on a free 127.0.0.1 port, once it accepts connections:
    (process, its tcp:// URL, bootstrap servers)."""
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"], stdout=subprocess.DEVNULL,
                            stderr=open(log, "w") if log else subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); break
        except OSError:
            time.sleep(0.05)
    return proc, url, f"127.0.0.1:{port}"


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
