# sys.exit() in a thread ends that thread silently; the program goes on.
import sys
import threading
import time

done = []


def worker():
    time.sleep(0.01)
    sys.exit(3)
    done.append("not reached")


thread = threading.Thread(target=worker)
thread.start()
thread.join()
print(f"main continues; worker alive: {thread.is_alive()}; after exit: {done}", flush=True)
other = threading.Thread(target=done.append, args=("second thread ran",))
other.start()
other.join()
print(done, flush=True)
