# makefile() readline / readlines / iteration / text reads over a TCP socket
# fed in arbitrary chunks.  Usage: diff_makefile.py '{"lines": [len...], "chunks": [size...], "pause": bool}'
import hashlib
import json
import socket
import sys
import threading
import time

params = json.loads(sys.argv[1])
LENGTHS, CHUNKS, PAUSE = params["lines"], params["chunks"], params["pause"]
ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789 \t\r"
lines = [bytes(ALPHABET[(n + k) % len(ALPHABET)] for k in range(length)) + b"\n"
         for n, length in enumerate(LENGTHS)]
data = b"".join(lines) + b"tail without newline"
server = socket.create_server(("127.0.0.1", 0))


def feed():
    """Send ``data`` on each accepted connection in the given chunk sizes, then close."""
    for _ in range(5):
        conn, _ = server.accept()
        with conn:
            offset, k = 0, 0
            while offset < len(data):
                size = CHUNKS[k % len(CHUNKS)]
                conn.sendall(data[offset:offset + size])
                offset += size
                k += 1
                if PAUSE and k % 3 == 0:
                    time.sleep(0.001)


def summary(name, got):
    joined = b"".join(got) if got and isinstance(got[0], bytes) else "".join(got).encode("latin-1")
    print(name, len(got), [len(x) for x in got][:50], hashlib.sha256(joined).hexdigest()[:16],
          joined == data)


feeder = threading.Thread(target=feed)
feeder.start()
address = server.getsockname()

with socket.create_connection(address) as sock, sock.makefile("rb") as stream:
    got = []
    while True:
        line = stream.readline()
        if not line:
            break
        got.append(line)
    summary("readline", got)

with socket.create_connection(address) as sock, sock.makefile("rb") as stream:
    summary("readlines", stream.readlines())

with socket.create_connection(address) as sock, sock.makefile("rb") as stream:
    summary("iteration", list(stream))

with socket.create_connection(address) as sock, sock.makefile("r", encoding="latin-1", newline="") as stream:
    got = []
    while True:
        part = stream.read(7)
        if not part:
            break
        got.append(part)
    summary("text read(7)", got)

with socket.create_connection(address) as sock, sock.makefile("rb", buffering=0) as raw:
    got = []
    buf = bytearray(5)
    while True:
        n = raw.readinto(buf)
        if not n:
            break
        got.append(bytes(buf[:n]))
    # chunk boundaries may differ from run to run; only the bytes are compared
    print("raw readinto", b"".join(got) == data)

feeder.join()
server.close()
print("threads left:", threading.active_count())
