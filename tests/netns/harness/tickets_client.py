#!/usr/bin/env python3
"""TLS session resumption from the client's side.

    tickets_client.py ADDRESS PORT SNI CAFILE

Reads commands on stdin, one per line, and answers each with one JSON line
{"status": HTTP status, "reused": whether the handshake resumed, "version": TLS version}:

    new NAME      a full handshake, then one request; keeps the session as NAME
    resume NAME   a handshake offering session NAME, then one request (NAME is kept as it was)
"""
import http.client
import json
import socket
import ssl
import sys

address, port, sni, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
sessions = {}


class Conn(http.client.HTTPSConnection):
    def __init__(self, session):
        super().__init__(address, port, context=ctx, timeout=10)
        self.offer = session

    def connect(self):
        sock = socket.create_connection((address, port), timeout=10)
        self.sock = ctx.wrap_socket(sock, server_hostname=sni, session=self.offer)


for line in sys.stdin:
    verb, name = line.split()
    conn = Conn(sessions.get(name) if verb == "resume" else None)
    conn.request("GET", "/ticket", headers={"Host": sni})
    r = conn.getresponse()
    r.read()
    # TLS 1.3 tickets arrive after the handshake; the response was read after them.
    if verb == "new":
        sessions[name] = conn.sock.session
    print(json.dumps({"status": r.status, "reused": conn.sock.session_reused,
                      "version": conn.sock.version()}), flush=True)
    conn.close()
