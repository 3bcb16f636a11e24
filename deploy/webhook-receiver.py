#!/usr/bin/env python3
"""A local webhook receiver for trying Pressline's alert notifications.

Prints every notification the gateway posts (generic webhook, Slack, Teams
or ntfy shape) and answers 200. With --log FILE it also appends one JSON
line per request: {"path", "headers", "body"}. Python's standard library
only.

    python3 deploy/webhook-receiver.py --port 9000
    gateway demo --webhook http://127.0.0.1:9000/hook
"""

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--log", help="append one JSON line per request to this file")
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            record = {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
            if args.log:
                with open(args.log, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            title = body.get("title") or body.get("text") if isinstance(body, dict) else None
            key = self.headers.get("Idempotency-Key", "")
            print(f"{self.path} [{key}] {title or body}", flush=True)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok":true}')

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
