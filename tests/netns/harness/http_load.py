#!/usr/bin/env python3
"""Steady HTTP load through a gateway, to show that changes under it cost nothing.

    http_load.py HOST SECONDS OUT_JSON [--https] [--timeout SECONDS]

- New connections: one every 5 ms (from a pool of threads), each a GET of / on a fresh
  connection, then closed. Refused, reset, timed out (3 s, or --timeout) or not 200 is a
  failure; the slowest answer is kept ("max_ms").
- Long-lived connections: 8, each sending a GET every 100 ms on the same kept-alive
  connection for the whole run. A failed request is a failure. A connection the gateway
  closes is reopened and counted: "closed" when it said so on a response (`Connection:
  close`), "dropped" when it was gone before the next request was answered (that request is
  then sent again once, on the new connection).

OUT_JSON gets {"new": {"ok", "failed": [reasons], "max_ms"}, "kept": {"ok", "failed", "closed",
"dropped"}}.
"""
import http.client
import json
import ssl
import sys
import threading
import time

host, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
https = "--https" in sys.argv
timeout = float(sys.argv[sys.argv.index("--timeout") + 1]) if "--timeout" in sys.argv else 3.0
ctx = ssl._create_unverified_context() if https else None
stop_at = time.time() + seconds
lock = threading.Lock()
new = {"ok": 0, "failed": [], "max_ms": 0.0}
kept = {"ok": 0, "failed": [], "closed": 0, "dropped": 0}


def connect():
    if https:
        return http.client.HTTPSConnection(host, 443, timeout=timeout, context=ctx)
    return http.client.HTTPConnection(host, 80, timeout=timeout)


def one():
    began = time.time()
    c = connect()
    try:
        c.request("GET", "/", headers={"Connection": "close"})
        r = c.getresponse()
        r.read()
        outcome = None if r.status == 200 else f"status {r.status}"
    except Exception as e:  # noqa: BLE001 - every failure counts
        outcome = f"{type(e).__name__}: {e}"
    finally:
        c.close()
    with lock:
        new["max_ms"] = max(new["max_ms"], (time.time() - began) * 1000)
        if outcome is None:
            new["ok"] += 1
        else:
            new["failed"].append(outcome)


def long_lived():
    c = connect()
    while time.time() < stop_at:
        try:
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            ok = r.status == 200
            reason = None if ok else f"status {r.status}"
            if r.getheader("Connection", "").lower() == "close":
                with lock:
                    kept["closed"] += 1
                c.close()
                c = connect()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
            # Closed between requests: counted, reopened, and the request tried again once.
            with lock:
                kept["dropped"] += 1
            c.close()
            c = connect()
            try:
                c.request("GET", "/")
                r = c.getresponse()
                r.read()
                ok, reason = r.status == 200, f"after reopen: status {r.status}"
            except Exception as e2:  # noqa: BLE001
                ok, reason = False, f"after reopen: {type(e2).__name__}: {e2}"
        except Exception as e:  # noqa: BLE001
            ok, reason = False, f"{type(e).__name__}: {e}"
            # The connection is in an unknown state (e.g. a timed-out request): a new one.
            c.close()
            c = connect()
        with lock:
            if ok:
                kept["ok"] += 1
            else:
                kept["failed"].append(reason)
        time.sleep(0.1)
    c.close()


threads = [threading.Thread(target=long_lived) for _ in range(8)]
for t in threads:
    t.start()
workers = []
while time.time() < stop_at:
    t = threading.Thread(target=one)
    t.start()
    workers.append(t)
    time.sleep(0.005)
for t in workers + threads:
    t.join()
json.dump({"new": new, "kept": kept}, open(out, "w"))
print("done", flush=True)
