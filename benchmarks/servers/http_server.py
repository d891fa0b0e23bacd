"""A small http.server.ThreadingHTTPServer: HTTP/1.1 keep-alive, fixed body.

Unmodified stdlib code; the benchmark driver runs it under each patcher.
    python http_server.py [--host 127.0.0.1] [--port 0]
Prints "READY <port>" once listening.
"""
import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b"Hello, World!\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes; do not let Nagle hold the body

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format, *args):
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 4096

    def handle_error(self, request, client_address):
        # wrk resets its connections when it stops; do not print a traceback for each
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with Server((args.host, args.port), Handler) as server:
        print("READY", server.server_address[1], flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
