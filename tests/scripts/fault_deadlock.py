# Two threads that each hold one lock and want the other's: a classic deadlock.
import threading

lock_a = threading.Lock()
lock_b = threading.Lock()
both_hold = threading.Barrier(2)


def first():
    with lock_a:
        both_hold.wait()
        lock_b.acquire()


def second():
    with lock_b:
        both_hold.wait()
        lock_a.acquire()


threads = [threading.Thread(target=first), threading.Thread(target=second)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("never reached")
