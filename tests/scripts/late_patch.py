# logging (with handlers), threading and queue are imported and used BEFORE the
# patch: module-level Lock, RLock, Condition and Queue, a logger with two
# StreamHandlers whose stream switches green threads while the handler's lock
# is held.  Then 20 green threads log heavily and contend on those objects
# while a heartbeat thread ticks every 10 ms.  Prints one JSON line.
#
#   python late_patch.py [greenpatch | gevent | eventlet]   (default greenpatch)
#   LATE_SKIP=lock,rlock,cond: leave those sections out (to see what else an anchor gets wrong)
import io
import json
import logging
import os
import queue
import sys
import threading
import time
import warnings
from time import sleep as early_sleep  # bound to the original before the patch: stays blocking

PATCHER = sys.argv[1] if len(sys.argv) > 1 else "greenpatch"
SKIP = set(os.environ.get("LATE_SKIP", "").split(","))
WORKERS, STEPS = 20, 25


class SwitchingStream(io.StringIO):
    """A stream whose write() waits a little, as a socket or pipe would: the handler's lock is held across it."""

    def write(self, text):
        time.sleep(0.0005)  # looked up at call time: green after the patch
        return super().write(text)


STREAM, ROOT_STREAM = SwitchingStream(), SwitchingStream()
log = logging.getLogger("late")
log.setLevel(logging.INFO)
log.propagate = False
handler = logging.StreamHandler(STREAM)
handler.setFormatter(logging.Formatter("%(threadName)s %(message)s"))
log.addHandler(handler)
logging.basicConfig(stream=ROOT_STREAM, level=logging.INFO, format="%(message)s")
log.info("before the patch")

LOCK = threading.Lock()
RLOCK = threading.RLock()                  # the C RLock: gc cannot see it
COND = threading.Condition()
JOBS = queue.Queue()
DONE = queue.Queue(maxsize=3)
CAPTURED = threading.Lock()                # also referenced from KEEP: cannot be swapped safely
KEEP = {"lock": CAPTURED}

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if PATCHER == "gevent":
        from gevent import monkey
        monkey.patch_all()
    elif PATCHER == "eventlet":
        import eventlet
        eventlet.monkey_patch()
    else:
        import greenpatch
        greenpatch.monkey_patch()

counter = 0
rlock_holder = [None]
violations = []
probes = []
beats = []
stop = threading.Event()


def heartbeat():
    last = time.monotonic()
    while not stop.is_set():
        time.sleep(0.01)
        now = time.monotonic()
        beats.append(now - last - 0.01)
        last = now


def worker(n):
    global counter
    me = threading.get_ident()
    for step in range(STEPS):
        log.info("worker %d step %d", n, step)
        logging.info("root %d %d", n, step)
        if "lock" not in SKIP:
            with LOCK:
                seen = counter
                time.sleep(0.001)             # switch while holding the lock
                counter = seen + 1
        if "rlock" not in SKIP:
            with RLOCK:
                with RLOCK:                   # re-entry by the owner
                    rlock_holder[0] = me
                    time.sleep(0.001)
                    if rlock_holder[0] != me:
                        violations.append((n, step, "RLock entered by another thread"))
        if "cond" not in SKIP:
            with COND:
                COND.notify_all()
                time.sleep(0.001)
        JOBS.put((n, step))
    DONE.put(n)


def consumer(got):
    while True:
        item = JOBS.get()
        if item is None:
            return
        got.append(item)
        JOBS.task_done()


def probe_rlock():
    # While one green thread owns RLOCK, another must not get it.
    holding, release = threading.Event(), threading.Event()

    def owner():
        with RLOCK:
            holding.set()
            release.wait()

    thread = threading.Thread(target=owner)
    thread.start()
    holding.wait()
    probes.append(RLOCK.acquire(blocking=False))        # must be False
    probes.append(RLOCK.acquire(timeout=0.02))           # must be False, after waiting
    release.set()
    thread.join()
    probes.append(RLOCK.acquire(timeout=1))              # now True
    RLOCK.release()


os_beats = []  # the same heartbeat in a real OS thread (greenpatch only): what the OS's own scheduling costs


def os_heartbeat(sleep):
    last = time.monotonic()
    while not stop.is_set():
        sleep(0.01)
        now = time.monotonic()
        os_beats.append(now - last - 0.01)
        last = now


if PATCHER == "greenpatch":
    from greenpatch.patcher import original
    original("_thread", "start_new_thread")(os_heartbeat, (original("time", "sleep"),))
got = []
beat = threading.Thread(target=heartbeat, name="heartbeat")
beat.start()
probe_rlock()
cons = threading.Thread(target=consumer, args=(got,))
cons.start()
threads = [threading.Thread(target=worker, args=(n,), name=f"w{n}") for n in range(WORKERS)]
for thread in threads:
    thread.start()
finished = sorted(DONE.get() for _ in range(WORKERS))
JOBS.join()
JOBS.put(None)
cons.join()
for thread in threads:
    thread.join()
stop.set()
beat.join()

lines = STREAM.getvalue().splitlines()
expected = {f"w{n} worker {n} step {s}" for n in range(WORKERS) for s in range(STEPS)}
result = {
    "patcher": PATCHER,
    "records_ok": lines[0] == "MainThread before the patch" and set(lines[1:]) == expected
    and len(lines) == 1 + WORKERS * STEPS,
    "root_records": len(ROOT_STREAM.getvalue().splitlines()),
    "counter": counter,
    "violations": violations[:3],
    "rlock_probes": probes,
    "jobs": len(got),
    "finished": finished == list(range(WORKERS)),
    "max_late": max(beats),
    "os_max_late": max(os_beats, default=None),
    "beats": len(beats),
    "warnings": [str(w.message) for w in caught if "PatchWarning" in w.category.__name__],
}
if PATCHER == "greenpatch":
    from greenpatch.patcher import report
    data = report()
    result["made_green"] = data.get("made_green")
    result["still_real"] = data.get("still_real")
    result["originals_still_referenced"] = data["originals_still_referenced"]
print(json.dumps(result), flush=True)
