# Producer/consumer with queue.Queue and with a threading.Condition buffer.
# Output is ordered by design (sorted, or facts that hold in any schedule).
# Usage: diff_queue.py '{"producers": P, "consumers": C, "items": N, "maxsize": M, "seed": S}'
import json
import queue
import random
import sys
import threading
import time

params = json.loads(sys.argv[1])
P, C, N, M, SEED = (params[k] for k in ("producers", "consumers", "items", "maxsize", "seed"))
DONE = object()


def jitter(rng):
    if rng.random() < 0.3:
        time.sleep(rng.random() * 0.002)


def check(name, got):
    everything = sorted(item for items in got for item in items)
    print(name, "items", len(everything), "all distinct and complete:",
          everything == sorted((p, i) for p in range(P) for i in range(N)))
    in_order = all([i for p2, i in items if p2 == p] == sorted(i for p2, i in items if p2 == p)
                   for items in got for p in range(P))
    print(name, "each consumer saw each producer in order:", in_order)


# -- queue.Queue ------------------------------------------------------------------
q = queue.Queue(maxsize=M)
got = [[] for _ in range(C)]


def produce(p):
    rng = random.Random(SEED * 100 + p)
    for i in range(N):
        jitter(rng)
        q.put((p, i))


def consume(c):
    rng = random.Random(SEED * 100 + 50 + c)
    while True:
        item = q.get()
        try:
            if item is DONE:
                return
            got[c].append(item)
            jitter(rng)
        finally:
            q.task_done()


producers = [threading.Thread(target=produce, args=(p,)) for p in range(P)]
consumers = [threading.Thread(target=consume, args=(c,)) for c in range(C)]
for t in producers + consumers:
    t.start()
for t in producers:
    t.join()
q.join()
print("queue joined, empty:", q.empty(), "unfinished:", q.unfinished_tasks)
for _ in consumers:
    q.put(DONE)
for t in consumers:
    t.join()
check("Queue", got)

try:
    queue.Queue(maxsize=1).get(timeout=0.01)
except queue.Empty:
    print("get(timeout) raised Empty")
full = queue.Queue(maxsize=1)
full.put(1)
try:
    full.put(2, timeout=0.01)
except queue.Full:
    print("put(timeout) raised Full")

# -- a bounded buffer on threading.Condition ------------------------------------------
buffer, cond = [], threading.Condition()
got = [[] for _ in range(C)]
finished = [0]


def produce_cond(p):
    rng = random.Random(SEED * 1000 + p)
    for i in range(N):
        jitter(rng)
        with cond:
            cond.wait_for(lambda: len(buffer) < M)
            buffer.append((p, i))
            cond.notify_all()
    with cond:
        finished[0] += 1
        cond.notify_all()


def consume_cond(c):
    while True:
        with cond:
            cond.wait_for(lambda: buffer or finished[0] == P)
            if not buffer:
                return
            got[c].append(buffer.pop(0))
            cond.notify_all()


threads = [threading.Thread(target=produce_cond, args=(p,)) for p in range(P)]
threads += [threading.Thread(target=consume_cond, args=(c,)) for c in range(C)]
for t in threads:
    t.start()
for t in threads:
    t.join()
check("Condition", got)

# -- PriorityQueue and LifoQueue, filled by threads, drained after join ------------------
pq, lq = queue.PriorityQueue(), queue.LifoQueue()
threads = [threading.Thread(target=lambda p=p: [pq.put((N - i, p)) for i in range(N)]) for p in range(P)]
for t in threads:
    t.start()
for t in threads:
    t.join()
drained = [pq.get() for _ in range(pq.qsize())]
print("PriorityQueue sorted:", drained == sorted(drained), len(drained))
for i in range(5):
    lq.put(i)
print("LifoQueue:", [lq.get() for _ in range(5)])
print("threads left:", threading.active_count())
