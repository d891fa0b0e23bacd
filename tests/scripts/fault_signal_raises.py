# A signal handler that raises while the main thread waits: the exception
# interrupts the main thread's wait, as with real threads.
import signal
import threading


class Boom(Exception):
    pass


def handler(signum, frame):
    raise Boom("from the handler")


signal.signal(signal.SIGALRM, handler)
signal.setitimer(signal.ITIMER_REAL, 0.1)
try:
    threading.Event().wait(3)
    print("main was not interrupted", flush=True)
except Boom as exc:
    print(f"main got Boom: {exc}", flush=True)
