# A user SIGTERM handler runs while the hub waits; the program goes on serving.
import signal
import socket
import threading

got = threading.Event()


def on_term(signum, frame):
    print(f"handler ran for signal {signum}", flush=True)
    got.set()


signal.signal(signal.SIGTERM, on_term)
listener = socket.create_server(("127.0.0.1", 0))


def serve():
    for _ in range(3):
        conn, _ = listener.accept()
        with conn:
            conn.sendall(conn.recv(100).upper())


server = threading.Thread(target=serve)
server.start()
print("waiting", flush=True)
if not got.wait(30):
    print("no signal", flush=True)
for index in range(3):
    with socket.create_connection(listener.getsockname()) as client:
        client.sendall(b"ping")
        assert client.recv(100) == b"PING"
server.join()
print("main woke: served 3 requests after the handler", flush=True)
