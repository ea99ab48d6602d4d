#!/usr/bin/env python3
"""A static file server for the repository that makes every page cross-origin isolated (COOP and
COEP headers), so that SharedArrayBuffer, hence lorb's threaded wasm build, is available.
Used by scripts/serve.sh and the e2e harness.

    python3 scripts/isolated_server.py PORT [BIND]
"""
import http.server
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()


if __name__ == "__main__":
    bind = sys.argv[2] if len(sys.argv) > 2 else ""
    http.server.ThreadingHTTPServer((bind, int(sys.argv[1])), Handler).serve_forever()
