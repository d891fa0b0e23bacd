"""A plain blocking echo server: one thread per client, line by line.

An ordinary Python program with no knowledge of greenpatch.  Run it as is and
every client costs an OS thread; run it as

    python -m greenpatch samples/echo_server.py

and every client is a green thread, all served by one OS thread.

Usage: echo_server.py [PORT]   (default 6000, or the PORT environment variable;
PORT 0 picks a free port).  HOST sets the address (default 127.0.0.1) and
ECHO_QUIET=1 turns off the per-client and per-line messages for load runs.
"""

import os
import socket
import sys
import threading

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "6000"))
QUIET = os.environ.get("ECHO_QUIET", "") not in ("", "0")


def log(message):
    if not QUIET:
        print(message, flush=True)


def handle(conn, addr):
    """Echo every line back until the client closes the connection."""
    log(f"client connected {addr[0]}:{addr[1]}")
    with conn, conn.makefile("rw", encoding="utf-8", newline="") as stream:
        while True:
            try:
                line = stream.readline()
                if not line:
                    break
                stream.write(line)
                stream.flush()
            except (ConnectionError, OSError):
                break
            log(f"echoed {line.rstrip()}")
    log(f"client disconnected {addr[0]}:{addr[1]}")


def main():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((HOST, PORT))
    server.listen(socket.SOMAXCONN)
    host, port = server.getsockname()[:2]
    print(f"echo server listening on {host}:{port}", flush=True)
    try:
        while True:
            conn, addr = server.accept()
            threading.Thread(target=handle, args=(conn, addr), daemon=True).start()
    except KeyboardInterrupt:
        print("echo server stopped", flush=True)
    finally:
        server.close()


if __name__ == "__main__":
    main()
