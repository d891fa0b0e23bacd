# A thread-per-client line server under a low fd limit: accept fails with
# EMFILE, the stdlib accept-loop pattern catches OSError and retries, and the
# server serves again once fds free up.  Usage: fault_emfile.py NOFILE
import errno
import resource
import socket
import sys
import threading
import time

limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def handle(conn):
    with conn, conn.makefile("rb") as stream:
        for line in stream:
            conn.sendall(line.upper())


server = socket.create_server(("127.0.0.1", 0), backlog=128)
print(f"listening {server.getsockname()[1]}", flush=True)
reported = False
try:
    while True:
        try:
            conn, _ = server.accept()
        except OSError as exc:
            if exc.errno != errno.EMFILE:
                raise
            if not reported:
                print("accept failed: EMFILE", flush=True)
                reported = True
            time.sleep(0.05)
            continue
        threading.Thread(target=handle, args=(conn,), daemon=True).start()
except KeyboardInterrupt:
    print("server stopped", flush=True)
