#!/usr/bin/env python3
"""A test backend: answers every HTTP request with JSON naming itself and echoing the request
(method, path, headers, peer, the length of its body), over plain TCP or TLS.

    echo.py NAME ADDRESS PORT [CERT KEY] [--proxy-v2] [--client-ca CA]

With --client-ca (TLS only) a client must show a certificate that CA signed, or the handshake
fails; the answer carries "client" (the certificate's subject common name).
With --proxy-v2 every connection must begin with a PROXY protocol v2 header (before TLS):
the answer then carries "proxy" (the header's source, destination and authority TLV) and
"conn" (the connection's serial number, to tell reused connections from new ones).
"""
import http.server
import json
import socket
import ssl
import sys

import ipaddress
import itertools
import struct

proxy_v2 = "--proxy-v2" in sys.argv
args = [a for a in sys.argv if a != "--proxy-v2"]
client_ca = None
if "--client-ca" in args:
    i = args.index("--client-ca")
    client_ca = args[i + 1]
    del args[i:i + 2]
name, address, port = args[1], args[2], int(args[3])
cert = args[4] if len(args) > 5 else None
key = args[5] if len(args) > 5 else None
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
serials = itertools.count(1)


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed in the PROXY header")
        data += chunk
    return data


def read_proxy_header(sock):
    """The PROXY v2 header's fields; raises if the connection does not start with one."""
    head = read_exact(sock, 16)
    if head[:12] != SIGNATURE or head[12] != 0x21:
        raise ConnectionError("no PROXY v2 header")
    body = read_exact(sock, struct.unpack("!H", head[14:16])[0])
    if head[13] == 0x11:
        src, dst, rest = ipaddress.ip_address(body[0:4]), ipaddress.ip_address(body[4:8]), body[8:]
    elif head[13] == 0x21:
        src, dst, rest = ipaddress.ip_address(body[0:16]), ipaddress.ip_address(body[16:32]), body[32:]
    else:
        raise ConnectionError("unexpected family")
    sport, dport = struct.unpack("!HH", rest[:4])
    tlvs, rest = {}, rest[4:]
    while len(rest) >= 3:
        t, n = rest[0], struct.unpack("!H", rest[1:3])[0]
        tlvs[t] = rest[3:3 + n]
        rest = rest[3 + n:]
    fmt = lambda a, p: f"[{a}]:{p}" if a.version == 6 else f"{a}:{p}"
    return {"src": fmt(src, sport), "dst": fmt(dst, dport),
            "authority": tlvs.get(2, b"").decode() or None}


def client_name(conn):
    """The common name of the client certificate the TLS session was made with."""
    for rdn in (conn.getpeercert() or {}).get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        data = self.rfile.read(length)
        body = json.dumps({
            "backend": name,
            "method": self.command,
            "body": len(data),
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "peer": self.client_address[0],
            **({"client": client_name(self.connection)} if client_ca else {}),
            **self.server.proxied.get(self.connection.fileno(), {}),
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = answer

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
    daemon_threads = True
    proxied = {}

    def get_request(self):
        sock, addr = super().get_request()
        if proxy_v2:
            sock.settimeout(10)
            try:
                info = read_proxy_header(sock)
            except (ConnectionError, OSError, ValueError) as e:
                print(f"refused a connection: {e}", flush=True)
                sock.close()
                raise OSError("no PROXY header") from e
            if cert:
                sock = tls.wrap_socket(sock, server_side=True)
            sock.settimeout(None)
            self.proxied[sock.fileno()] = {"proxy": info, "conn": next(serials)}
        return sock, addr


tls = None
if cert:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    if client_ca:
        tls.verify_mode = ssl.CERT_REQUIRED
        tls.load_verify_locations(client_ca)
server = Server((address, port), Handler)
if cert and not proxy_v2:
    server.socket = tls.wrap_socket(server.socket, server_side=True)
print(f"{name} listening on {address}:{port}", flush=True)
server.serve_forever()
