#!/usr/bin/env python3
"""Keeps one HTTPS connection open across a certificate rotation.

    https_client.py ADDRESS PORT SNI CAFILE PATH

Prints one JSON line per request: {"serial": server certificate serial, "status": ...,
"backend": ...}. Makes a request, prints, then waits for a line on stdin and makes another
request on the same connection, and so on until stdin closes.
"""
import http.client
import json
import ssl
import sys

address, port, sni, cafile, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile)
conn = http.client.HTTPSConnection(address, port, context=ctx, timeout=10)
conn.sock = None


class Sni(http.client.HTTPSConnection):
    def connect(self):
        import socket
        sock = socket.create_connection((address, port), timeout=10)
        self.sock = ctx.wrap_socket(sock, server_hostname=sni)


conn = Sni(address, port, context=ctx, timeout=10)
while True:
    conn.request("GET", path, headers={"Host": sni})
    r = conn.getresponse()
    body = r.read()
    cert = conn.sock.getpeercert()
    print(json.dumps({"serial": cert.get("serialNumber"), "status": r.status,
                      "backend": json.loads(body).get("backend") if r.status == 200 else None}), flush=True)
    if not sys.stdin.readline():
        break
