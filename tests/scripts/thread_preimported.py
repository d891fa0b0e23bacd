# threading, logging (with a handler) and concurrent.futures are imported and
# used BEFORE monkey_patch(); afterwards locks and threads must be green,
# logging must keep working from green threads, and the warning must name
# only what could not be fixed.  Prints "@@ ok" at the end, or a traceback.
import concurrent.futures.thread
import io
import logging
import os
import threading
import warnings

stream = io.StringIO()
handler = logging.StreamHandler(stream)
handler.setFormatter(logging.Formatter("%(threadName)s %(message)s"))
log = logging.getLogger("pre")
log.addHandler(handler)
log.setLevel(logging.INFO)
log.info("before the patch")

early_lock = threading.Lock()  # a module-level real lock outside the standard library
main_before = threading.main_thread()

import greenpatch  # noqa: E402
import greenpatch.locks  # noqa: E402

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    greenpatch.monkey_patch()

import time  # noqa: E402

messages = [str(w.message) for w in caught if issubclass(w.category, greenpatch.PatchWarning)]
# A free lock only the module namespace holds is made green (greenpatch._late), not warned about.
assert isinstance(early_lock, greenpatch.locks.Lock) and not any("early_lock" in m for m in messages), messages
assert not any("logging" in m or "threading._" in m or "concurrent" in m for m in messages), messages

assert isinstance(threading.Lock(), greenpatch.locks.Lock)
assert isinstance(threading.RLock(), greenpatch.locks.RLock)
assert isinstance(logging._lock, greenpatch.locks.RLock)
assert isinstance(handler.lock, greenpatch.locks.RLock)
assert isinstance(threading._active_limbo_lock, greenpatch.locks.RLock)
assert isinstance(concurrent.futures.thread._global_shutdown_lock, greenpatch.locks.Lock)
assert threading.main_thread() is main_before and main_before.ident == threading.get_ident()
assert threading.current_thread() is main_before


def work(n):
    time.sleep(0.05)
    log.info("green %d", n)


begin = time.monotonic()
threads = [threading.Thread(target=work, args=(n,), name=f"w{n}") for n in range(50)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
assert time.monotonic() - begin < 2.0  # 50 sequential 50 ms sleeps would take 2.5 s
assert len(os.listdir("/proc/self/task")) == 1
lines = stream.getvalue().splitlines()
assert lines[0] == "MainThread before the patch"
assert sorted(lines[1:]) == sorted(f"w{n} green {n}" for n in range(50)), lines

# A green thread can join the main thread (its thread-state lock / handle is green now).
joined = []
joiner = threading.Thread(target=lambda: joined.append(threading.main_thread().join(0.02)))
joiner.start()
joiner.join()
assert joined == [None] and threading.main_thread().is_alive()

# current_thread() in a greenlet threading did not start gives a dummy thread that
# leaves threading._active once the greenlet is gone.
before = len(threading._active)
names = greenpatch.spawn(lambda: threading.current_thread().name).wait()
assert names.startswith("Dummy-"), names
greenpatch.sleep(0)
import gc  # noqa: E402

gc.collect()
assert len(threading._active) == before, (before, threading._active)

# The executor's shutdown lock is held across Thread.start(): concurrent submits must not deadlock.
with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    futures = [pool.submit(time.sleep, 0.01) for _ in range(8)]
    assert [f.result(timeout=5) for f in futures] == [None] * 8
print("@@ ok", flush=True)
