#!/usr/bin/env python3
"""POSTs a body and prints, as JSON, the answer's status and every line of its body with the
time it arrived (seconds since the response head), to tell streamed answers from buffered ones.

    stream_client.py HOST PORT PATH BODY
"""
import http.client
import json
import sys
import time

host, port, path, body = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
conn = http.client.HTTPConnection(host, port, timeout=20)
conn.request("POST", path, body=body.encode(), headers={"Content-Type": "application/json"})
resp = conn.getresponse()
t0 = time.monotonic()
lines = []
while True:
    line = resp.readline()
    if not line:
        break
    lines.append([round(time.monotonic() - t0, 3), line.decode().rstrip("\n")])
print(json.dumps({"status": resp.status, "lines": lines}))
