#!/usr/bin/env python3
"""A deliberately broken BGP peer for kube-gw's malformed-input test.

Usage: rawpeer.py RESULTS_DIR SECONDS SWITCH_ADDR ADDR=SCENARIO [ADDR=SCENARIO ...]

Listens on port 179 of each address (kube-gw connects to it as its neighbor), plays the
scenario once, and writes RESULTS_DIR/ADDR.json: the first NOTIFICATION kube-gw sent
({"code", "subcode", "data"} in hex) or null, and whether kube-gw's KEEPALIVEs kept coming.
Standard library only; every address is served by its own thread.
"""
import json
import os
import socket
import struct
import sys
import threading
import time

MARKER = b"\xff" * 16
PEER_AS = 65050


def msg(kind, body=b"", marker=MARKER, length=None):
    n = 19 + len(body) if length is None else length
    return marker + struct.pack("!HB", n, kind) + body


def open_body(version=4, asn=PEER_AS, hold=9, ident="10.9.9.9"):
    caps = b""
    caps += bytes([1, 4, 0, 1, 0, 1])  # MP IPv4 unicast
    caps += bytes([65, 4]) + struct.pack("!I", asn)  # 4-octet AS
    params = bytes([2, len(caps)]) + caps
    two = asn if asn < 65536 else 23456
    return (
        bytes([version])
        + struct.pack("!HH", two, hold)
        + socket.inet_aton(ident)
        + bytes([len(params)])
        + params
    )


def attr(flags, kind, value):
    return bytes([flags, kind, len(value)]) + value


def good_attrs(path=(PEER_AS,)):
    segment = bytes([2, len(path)]) + b"".join(struct.pack("!I", a) for a in path)
    return (
        attr(0x40, 1, b"\x00")
        + attr(0x40, 2, segment)
        + attr(0x40, 3, socket.inet_aton("192.0.2.1"))
    )


def update(attrs=b"", nlri=b"", withdrawn=b"", tal=None):
    n = len(attrs) if tal is None else tal
    return (
        struct.pack("!H", len(withdrawn)) + withdrawn + struct.pack("!H", n) + attrs + nlri
    )


def nlri32(*addrs):
    return b"".join(bytes([32]) + socket.inet_aton(a) for a in addrs)


GOOD = msg(2, update(good_attrs(), nlri32("203.0.113.1")))

# What each scenario sends: `first` replaces our OPEN; `then` follows a good OPEN and
# KEEPALIVE once kube-gw's KEEPALIVE arrives (the session is Established).
SCENARIOS = {
    "bad-marker": {"first": msg(4, marker=b"\x00" * 16)},
    "bad-length": {"first": msg(4, length=18)},
    "unknown-type": {"first": msg(9)},
    "open-version": {"first": msg(1, open_body(version=3))},
    "open-peer-as": {"first": msg(1, open_body(asn=65099))},
    "open-hold-1": {"first": msg(1, open_body(hold=1))},
    # The good route, then one with ORIGIN 7: treated as withdraw, the session stays.
    "update-bad-origin": {
        "then": [
            GOOD,
            msg(
                2,
                update(
                    attr(0x40, 1, b"\x07") + good_attrs()[4:],
                    nlri32("203.0.113.1"),
                ),
            ),
            msg(2, update(good_attrs(), nlri32("203.0.113.2"))),
        ]
    },
    "update-attr-length": {
        "then": [GOOD, msg(2, update(good_attrs(), nlri32("203.0.113.3"), tal=200))]
    },
    "update-unknown-well-known": {
        "then": [GOOD, msg(2, update(good_attrs() + attr(0x40, 99, b"\x01"), nlri32("203.0.113.4")))]
    },
    # kube-gw's own AS (65010) in the path: the route is not accepted.
    "update-as-loop": {
        "then": [GOOD, msg(2, update(good_attrs((PEER_AS, 65010)), nlri32("203.0.113.5")))]
    },
    # Three prefixes to a neighbor with max-prefixes = 2.
    "max-prefixes": {
        "then": [msg(2, update(good_attrs(), nlri32("203.0.113.6", "203.0.113.7", "203.0.113.8")))]
    },
}


def read_msg(sock):
    head = b""
    while len(head) < 19:
        chunk = sock.recv(19 - len(head))
        if not chunk:
            return None
        head += chunk
    n, kind = struct.unpack("!HB", head[16:19])
    body = b""
    while len(body) < n - 19:
        chunk = sock.recv(n - 19 - len(body))
        if not chunk:
            return None
        body += chunk
    return kind, body


def accept(addr, deadline):
    """kube-gw's connection to ADDR:179 (reads time out after 1 s), or None by the deadline."""
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((addr, 179))
    lst.listen(1)
    lst.settimeout(max(1.0, deadline - time.time()))
    try:
        conn, _ = lst.accept()
    except socket.timeout:
        return None
    finally:
        lst.close()
    conn.settimeout(1.0)
    return conn


def serve(addr, scenario, results, deadline):
    plan = SCENARIOS[scenario]
    out = {"scenario": scenario, "notification": None, "keepalives_after": 0, "established": False}
    conn = accept(addr, deadline)
    if conn is None:
        out["error"] = "kube-gw never connected"
        write(results, addr, out)
        return
    sent_then = False
    last_keepalive = 0.0
    try:
        got_open = False
        while time.time() < deadline:
            try:
                m = read_msg(conn)
            except socket.timeout:
                m = "timeout"
            if m is None:
                break
            if m != "timeout":
                kind, body = m
                if kind == 3:
                    out["notification"] = {
                        "code": body[0],
                        "subcode": body[1],
                        "data": body[2:].hex(),
                    }
                    break
                if kind == 1 and not got_open:
                    got_open = True
                    if "first" in plan:
                        conn.sendall(plan["first"])
                    else:
                        conn.sendall(msg(1, open_body()) + msg(4))
                elif kind == 4 and "then" in plan:
                    if not sent_then:
                        out["established"] = True
                        for m2 in plan["then"]:
                            conn.sendall(m2)
                            time.sleep(0.3)
                        sent_then = True
                    else:
                        out["keepalives_after"] += 1
            if "then" in plan and got_open and time.time() - last_keepalive > 2:
                conn.sendall(msg(4))
                last_keepalive = time.time()
    except OSError as e:
        out["error"] = str(e)
    conn.close()
    write(results, addr, out)


def serve_collision(addr, scenario, switch, results, deadline):
    """Both sides connect: kube-gw's connection (A) reaches OpenConfirm, then this peer
    opens its own (B) with an identifier above or below kube-gw's (192.0.2.20)."""
    ident = "203.0.113.250" if scenario == "collision-higher-id" else "10.9.9.9"
    out = {"scenario": scenario, "a_notification": None, "b_notification": None,
           "b_open": False, "b_established": False, "b_keepalives_after": 0}
    a = accept(addr, deadline)
    if a is None:
        out["error"] = "kube-gw never connected"
        write(results, addr, out)
        return
    b = None
    last_keepalive = 0.0
    try:
        while time.time() < deadline:
            for name, conn in (("a", a), ("b", b)):
                if conn is None:
                    continue
                try:
                    m = read_msg(conn)
                except socket.timeout:
                    continue
                if m is None:
                    if name == "a":
                        a = None
                    else:
                        b = None
                    continue
                kind, body = m
                if kind == 3:
                    out[name + "_notification"] = {"code": body[0], "subcode": body[1]}
                    if name == "a":
                        a = None
                    else:
                        b = None
                elif name == "a" and kind == 1:
                    conn.sendall(msg(1, open_body(ident=ident)))
                elif name == "a" and kind == 4 and b is None and out["b_notification"] is None:
                    # kube-gw is in OpenConfirm on A: now the peer's own connection.
                    b = socket.create_connection((switch, 179), timeout=5, source_address=(addr, 0))
                    b.settimeout(1.0)
                    b.sendall(msg(1, open_body(ident=ident)))
                elif name == "a" and kind == 4 and out["b_notification"] is not None:
                    conn.sendall(msg(4))
                elif name == "b" and kind == 1:
                    out["b_open"] = True
                elif name == "b" and kind == 4:
                    if not out["b_established"]:
                        out["b_established"] = True
                        conn.sendall(msg(4))
                    else:
                        out["b_keepalives_after"] += 1
            now = time.time()
            if now - last_keepalive > 2:
                last_keepalive = now
                if b is not None and out["b_established"]:
                    b.sendall(msg(4))
                if a is not None and out["b_notification"] is not None:
                    a.sendall(msg(4))
            if a is None and b is None:
                break
    except OSError as e:
        out["error"] = str(e)
    write(results, addr, out)


def write(results, addr, out):
    with open(os.path.join(results, addr + ".json.tmp"), "w") as f:
        json.dump(out, f)
    os.rename(os.path.join(results, addr + ".json.tmp"), os.path.join(results, addr + ".json"))


def main():
    results, seconds, switch = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    deadline = time.time() + seconds
    threads = []
    for arg in sys.argv[4:]:
        addr, scenario = arg.split("=")
        if scenario.startswith("collision-"):
            target, args = serve_collision, (addr, scenario, switch, results, deadline)
        else:
            target, args = serve, (addr, scenario, results, deadline)
        t = threading.Thread(target=target, args=args)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
