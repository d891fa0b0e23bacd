"""A blocking echo server built on socketserver.ThreadingTCPServer.

Unmodified stdlib code; the benchmark driver runs it under each patcher.
    python echo_socketserver.py [--host 127.0.0.1] [--port 0]
Prints "READY <port>" once listening.
"""
import argparse
import socket
import socketserver


class EchoHandler(socketserver.BaseRequestHandler):
    def setup(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self):
        conn = self.request
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 4096


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with Server((args.host, args.port), EchoHandler) as server:
        print("READY", server.server_address[1], flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
