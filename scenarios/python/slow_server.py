#!/usr/bin/env python3
"""A ThreadingHTTPServer whose handlers wait in known ways, and the slow
downstream one of them calls.

    slow_server.py server --port P [--downstream-port D]
        GET /sleep/N     sleeps N ms in the handler (time.sleep)
        GET /downstream  sends a line to 127.0.0.1:D and waits for the reply
    slow_server.py downstream --port D --delay-ms N
        answers each line after N ms
"""
import argparse
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(downstream_port):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, body):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.startswith("/sleep/"):
                ms = int(self.path.split("/")[2])
                time.sleep(ms / 1000)
                self.reply(b"slept\n")
            elif self.path == "/downstream":
                # No timeout: the handler waits as long as the downstream does.
                with socket.create_connection(("127.0.0.1", downstream_port)) as s:
                    s.sendall(b"ping\n")
                    data = s.recv(64)
                self.reply(data)
            else:
                self.send_error(404)

    return Handler


class Downstream(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve_downstream(port, delay_ms):
    class Slow(socketserver.StreamRequestHandler):
        def handle(self):
            for _ in self.rfile:
                time.sleep(delay_ms / 1000)
                self.wfile.write(b"pong\n")

    with Downstream(("127.0.0.1", port), Slow) as srv:
        srv.serve_forever()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["server", "downstream"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--downstream-port", type=int, default=0)
    p.add_argument("--delay-ms", type=int, default=200)
    a = p.parse_args()
    if a.role == "downstream":
        serve_downstream(a.port, a.delay_ms)
    else:
        ThreadingHTTPServer.daemon_threads = True
        ThreadingHTTPServer(("127.0.0.1", a.port), make_handler(a.downstream_port)).serve_forever()


if __name__ == "__main__":
    main()
