# Timer / Event / Barrier / Semaphore / local choreography; results sorted or ordered by design.
# Usage: diff_sync.py '{"parties": K, "delays": [ms...]}'
import json
import sys
import threading
import time

params = json.loads(sys.argv[1])
K, DELAYS = params["parties"], params["delays"]


def delay(i):
    time.sleep(DELAYS[i % len(DELAYS)] / 1000)


def run_all(target, count):
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# Event set by a Timer releases every waiter.
event = threading.Event()
woke = []
timer = threading.Timer(0.02, event.set)
timer.start()
run_all(lambda i: woke.append((i, event.wait(10))), K)
timer.join()
print("event waiters woke:", sorted(woke))
print("unset event wait(0.01):", threading.Event().wait(0.01))

# A cancelled Timer never fires; Timer with args does.
fired = []
cancelled = threading.Timer(0.03, fired.append, args=("cancelled one",))
cancelled.start()
cancelled.cancel()
kept = threading.Timer(0.01, fired.append, args=("kept one",))
kept.start()
kept.join()
cancelled.join()
time.sleep(0.04)
print("timers fired:", fired, "alive:", cancelled.is_alive(), kept.is_alive())

# Barrier phases with an action; every index handed out once per phase.
actions = []
barrier = threading.Barrier(K, action=lambda: actions.append(len(actions)))
indices = [[] for _ in range(3)]


def phases(i):
    for phase in range(3):
        delay(i + phase)
        indices[phase].append(barrier.wait(10))


run_all(phases, K)
print("barrier actions:", actions, "indices:", [sorted(x) for x in indices])

# abort() breaks the barrier for everyone waiting and anyone who comes later.
barrier = threading.Barrier(K + 1)
broken = []


def waiter(i):
    try:
        barrier.wait(10)
    except threading.BrokenBarrierError:
        broken.append(i)


threads = [threading.Thread(target=waiter, args=(i,)) for i in range(K)]
for t in threads:
    t.start()
while barrier.n_waiting < K:
    time.sleep(0.001)
barrier.abort()
for t in threads:
    t.join()
print("aborted barrier broke:", sorted(broken), "broken:", barrier.broken)

# A barrier wait that times out breaks it.
try:
    threading.Barrier(2).wait(0.01)
except threading.BrokenBarrierError:
    print("barrier wait(timeout) raised BrokenBarrierError")

# A Semaphore bounds concurrency.
limit = max(1, K // 2)
sem = threading.BoundedSemaphore(limit)
inside, peak = [0], [0]


def guarded(i):
    with sem:
        inside[0] += 1
        peak[0] = max(peak[0], inside[0])
        delay(i)
        inside[0] -= 1


run_all(guarded, K * 2)
print("semaphore peak within limit:", 1 <= peak[0] <= limit)
try:
    sem.release()
except ValueError:
    print("over-release raised ValueError")

# threading.local: each thread sees its own value.
local = threading.local()
seen = []


def use_local(i):
    local.value = i
    delay(i)
    seen.append(local.value == i)


run_all(use_local, K)
print("local values kept:", all(seen), len(seen), "main has none:", not hasattr(local, "value"))
print("threads left:", threading.active_count())
