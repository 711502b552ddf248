"""Steady TCP load for the traffic tests, run inside a lab namespace.

  python3 load.py client VIP PORT SECONDS SOURCES_FILE OUT_JSON
  python3 load.py server ADDRESS PORT

The client opens a new connection every few milliseconds, each from the next of many
source addresses, and keeps it for a while: it sends a line, reads it back, and does so
again every 50 ms for 200-400 ms, then closes. A connection that cannot be made, is reset,
or does not answer within 3 s is a failure. Every connection is written to OUT_JSON with
its start and end (wall clock) and outcome, so the test can tell which were in flight when
something happened. The server echoes lines.
"""

import json
import random
import socket
import socketserver
import sys
import threading
import time

WORKERS = 40
TIMEOUT = 3.0


def client(vip, port, seconds, sources_file, out):
    sources = [l.strip() for l in open(sources_file) if l.strip()]
    stop_at = time.time() + seconds
    lock = threading.Lock()
    records = []
    counter = [0]

    def one(src):
        start = time.time()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        outcome = "ok"
        try:
            s.bind((src, 0))
            s.connect((vip, port))
            f = s.makefile("rwb")
            for i in range(random.randint(4, 8)):
                msg = ("%s %d\n" % (src, i)).encode()
                f.write(msg)
                f.flush()
                if f.readline() != msg:
                    outcome = "bad echo"
                    break
                time.sleep(0.05)
        except Exception as e:  # noqa: BLE001 - every failure counts, with its reason
            outcome = type(e).__name__ + ": " + str(e)
        finally:
            s.close()
        with lock:
            records.append({"src": src, "start": start, "end": time.time(), "outcome": outcome})

    def worker(w):
        while time.time() < stop_at:
            with lock:
                n = counter[0]
                counter[0] += 1
            one(sources[n % len(sources)])
            time.sleep(0.002)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
        time.sleep(0.005)
    for t in threads:
        t.join()
    with open(out + ".tmp", "w") as f:
        json.dump(records, f)
    import os

    os.rename(out + ".tmp", out)


class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
            self.wfile.flush()


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


def server(address, port):
    Server((address, port), Echo).serve_forever()


if __name__ == "__main__":
    if sys.argv[1] == "client":
        client(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6])
    else:
        server(sys.argv[2], int(sys.argv[3]))
