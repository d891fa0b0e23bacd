# Hundreds of threads wait (on an Event and on sockets); Ctrl-C must reach main.
import socket
import sys
import threading

count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
event = threading.Event()
pairs = [socket.socketpair() for _ in range(count // 2)]


def wait_event():
    event.wait()


def wait_socket(sock):
    try:
        sock.recv(1)
    except OSError:
        pass


threads = [threading.Thread(target=wait_event, daemon=True) for _ in range(count - len(pairs))]
threads += [threading.Thread(target=wait_socket, args=(a,), daemon=True) for a, b in pairs]
for thread in threads:
    thread.start()
try:
    print("waiting", flush=True)  # inside the try: Ctrl-C may come at once
    threading.Event().wait(60)
    print("main timed out: no KeyboardInterrupt", flush=True)
except KeyboardInterrupt:
    print("main got KeyboardInterrupt", flush=True)
print(f"still waiting: {sum(t.is_alive() for t in threads)}", flush=True)
