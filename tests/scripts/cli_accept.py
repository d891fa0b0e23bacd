# Blocks in socket.accept() until Ctrl-C; prints the time KeyboardInterrupt arrived.
import socket
import time

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print("ready", flush=True)
try:
    server.accept()
except KeyboardInterrupt:
    print(f"KeyboardInterrupt at {time.time():.6f}", flush=True)
    raise
