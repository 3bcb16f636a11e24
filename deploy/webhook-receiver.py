#!/usr/bin/env python3
"""A local webhook receiver for trying Pressline's alert notifications.

Prints every notification the gateway posts (generic webhook, Slack, Teams
or ntfy shape) and answers 200. With --log FILE it also appends one JSON
line per request: {"path", "headers", "body", "status"}. Python's standard
library only.

    python3 deploy/webhook-receiver.py --port 9000
    gateway demo --webhook http://127.0.0.1:9000/hook

To see how the gateway copes with a receiver that misbehaves:
--reject KEY=STATUS answers STATUS to the notification with that
Idempotency-Key (422 gets it parked after three tries); --hold-while FILE
keeps every request waiting, unanswered, while FILE exists.
"""

import argparse
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def rejection(text):
    key, _, status = text.rpartition("=")
    if not key or not status.isdigit():
        raise argparse.ArgumentTypeError(f"expected KEY=STATUS, got {text!r}")
    return key, int(status)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--log", help="append one JSON line per request to this file")
    parser.add_argument("--reject", type=rejection, action="append", default=[],
                        metavar="KEY=STATUS", help="answer STATUS to this Idempotency-Key")
    parser.add_argument("--hold-while", metavar="FILE",
                        help="hold requests unanswered while FILE exists")
    args = parser.parse_args()
    rejected = dict(args.reject)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            key = self.headers.get("Idempotency-Key", "")
            status = rejected.get(key, 200)
            record = {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
                "status": status,
            }
            if args.log:
                with open(args.log, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            title = body.get("title") or body.get("text") if isinstance(body, dict) else None
            print(f"{self.path} [{key}] {status} {title or body}", flush=True)
            while args.hold_while and os.path.exists(args.hold_while):
                time.sleep(0.05)
            answer = b'{"ok":true}' if status < 300 else b'{"error":"rejected by --reject"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    print(f"listening on http://{args.bind}:{args.port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
