# socketserver.ThreadingTCPServer request/response, shut down cleanly.
# Usage: diff_socketserver.py '{"clients": C, "requests": R, "sizes": [n...]}'
import json
import socket
import socketserver
import sys
import threading

params = json.loads(sys.argv[1])
C, R, SIZES = params["clients"], params["requests"], params["sizes"]


class Upper(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line.upper())


server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Upper)
serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
serving.start()
results = {}


def client(c):
    with socket.create_connection(server.server_address) as sock, sock.makefile("rwb") as stream:
        answers = []
        for r in range(R):
            size = SIZES[(c + r) % len(SIZES)]
            request = (f"client {c} request {r} " + "x" * size).encode() + b"\n"
            stream.write(request)
            stream.flush()
            answers.append(stream.readline() == request.upper())
        results[c] = answers


clients = [threading.Thread(target=client, args=(c,)) for c in range(C)]
for t in clients:
    t.start()
for t in clients:
    t.join()
print("answers:", sorted((c, all(a), len(a)) for c, a in results.items()))
server.shutdown()
serving.join()
server.server_close()
print("shut down; threads left:", threading.active_count())
