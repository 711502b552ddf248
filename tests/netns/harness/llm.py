#!/usr/bin/env python3
"""A stand-in for an Ollama / OpenAI-compatible model server: records the exact bytes of every
request body it gets, and answers like the real APIs, streaming when the request asks to.

    llm.py ADDRESS PORT RECORD_FILE

- Every POST's body is appended to RECORD_FILE as one JSON line:
  {"path": ..., "body_b64": ..., "content_length": ...}.
- A JSON body with "stream": true gets a streamed answer of 4 parts, 0.5 s apart: NDJSON
  (Ollama's /api/*) or server-sent events ending in "data: [DONE]" (/v1/*), chunked.
- Otherwise one JSON answer naming the model the request carried ({"model": ...}).
"""
import base64
import http.server
import json
import sys
import time

address, port, record = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_POST(self):
        body = self.read_body()
        with open(record, "a") as f:
            f.write(json.dumps({
                "path": self.path,
                "body_b64": base64.b64encode(body).decode(),
                "content_length": self.headers.get("Content-Length"),
            }) + "\n")
        try:
            req = json.loads(body)
        except ValueError:
            req = None
        model = req.get("model") if isinstance(req, dict) else None
        if isinstance(req, dict) and req.get("stream"):
            sse = self.path.startswith("/v1/")
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream" if sse else "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(4):
                part = json.dumps({"model": model, "part": i, "done": i == 3})
                data = (f"data: {part}\n\n" if sse else part + "\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                time.sleep(0.5)
            if sse:
                data = b"data: [DONE]\n\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return
        out = json.dumps({"model": model, "response": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


http.server.ThreadingHTTPServer.allow_reuse_address = True
server = http.server.ThreadingHTTPServer((address, port), Handler)
print("listening", flush=True)
server.serve_forever()
