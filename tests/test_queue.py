"""Green queues: greenpatch.queue in-process, and queue under the patch in a subprocess."""

import queue
import sys
import threading
import time

import pytest

import greenpatch
from greenpatch.green import queue as green_queue
from greenpatch.locks import Condition, Lock
from greenpatch.queue import LifoQueue, PriorityQueue, Queue, SimpleQueue

from test_threading import scenario_results

PY313 = sys.version_info >= (3, 13)


def test_exceptions_are_the_stdlib_classes():
    assert greenpatch.queue.Empty is queue.Empty and greenpatch.queue.Full is queue.Full
    if PY313:
        assert greenpatch.queue.ShutDown is queue.ShutDown


def test_fifo_lifo_and_priority_order():
    for cls, expected in ((Queue, [3, 1, 2]), (LifoQueue, [2, 1, 3]), (PriorityQueue, [1, 2, 3])):
        q = cls()
        for n in (3, 1, 2):
            q.put(n)
        assert q.qsize() == 3 and not q.empty()
        assert [q.get() for _ in range(3)] == expected, cls
        assert q.empty()


def test_get_waits_for_a_put_from_another_green_thread():
    q = Queue()
    getter = greenpatch.spawn(q.get, timeout=5)
    greenpatch.sleep(0.01)
    assert not getter.ready()
    q.put("item")
    assert getter.wait() == "item"


def test_get_timeout_and_nowait_raise_empty():
    q = Queue()
    begin = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    assert time.monotonic() - begin >= 0.045
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(False)


def test_bounded_put_waits_for_room_and_times_out_with_full():
    q = Queue(maxsize=2)
    q.put(1)
    q.put(2)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    begin = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    assert time.monotonic() - begin >= 0.045
    putter = greenpatch.spawn(q.put, 3)
    greenpatch.sleep(0.01)
    assert not putter.ready()
    assert q.get() == 1
    putter.wait()
    assert [q.get(), q.get()] == [2, 3]


def test_negative_timeouts_are_rejected_like_the_stdlib():
    for q in (Queue(), Queue(maxsize=1), queue.Queue(), queue.Queue(maxsize=1)):
        q.put(1)
        with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
            q.get(timeout=-1)  # even with an item there, as the stdlib does
    bounded = Queue(maxsize=5)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        bounded.put(1, timeout=-1)
    for q in (SimpleQueue(), queue.SimpleQueue()):
        q.put(1)
        with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
            q.get(timeout=-1)
        assert q.get(False, -1) == 1  # the timeout is ignored when not blocking


def test_task_done_and_join():
    q = Queue()
    done = []

    def worker():
        while True:
            item = q.get()
            if item is None:
                return
            greenpatch.sleep(0.005)
            done.append(item)
            q.task_done()

    thread = greenpatch.spawn(worker)
    for n in range(5):
        q.put(n)
    q.join()
    assert done == [0, 1, 2, 3, 4]
    q.put(None)
    thread.wait()
    q.task_done()  # for the None
    with pytest.raises(ValueError, match="task_done\\(\\) called too many times"):
        q.task_done()


def test_subclass_representation_hooks_are_used():
    class EvensFirst(Queue):
        def _init(self, maxsize):
            self.queue = []

        def _qsize(self):
            return len(self.queue)

        def _put(self, item):
            self.queue.append(item)
            self.queue.sort(key=lambda n: (n % 2, n))

        def _get(self):
            return self.queue.pop(0)

    q = EvensFirst()
    assert not q._plain
    for n in (3, 2, 1, 4):
        q.put(n)
    assert [q.get() for _ in range(4)] == [2, 4, 1, 3]


def test_the_stdlib_attributes_are_there_for_careful_callers():
    q = Queue(maxsize=3)
    assert isinstance(q.mutex, Lock)
    assert all(isinstance(c, Condition) and c._lock is q.mutex for c in (q.not_empty, q.not_full, q.all_tasks_done))
    q.put(1)
    q.put(2)
    with q.mutex:  # the "clear a queue" idiom
        q.queue.clear()
        q.unfinished_tasks = 0
        q.all_tasks_done.notify_all()
    assert q.empty()
    q.join()
    assert Queue[int].__origin__ is Queue and SimpleQueue[str].__origin__ is SimpleQueue


def test_external_notify_on_not_empty_wakes_a_waiting_getter():
    q = Queue()
    getter = greenpatch.spawn(q.get, timeout=5)
    greenpatch.sleep(0.01)
    with q.mutex:
        q.queue.append("sneaked in")
        q.not_empty.notify()
    assert getter.wait() == "sneaked in"


@pytest.mark.skipif(not PY313, reason="Queue.shutdown() is new in 3.13")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_shutdown_wakes_blocked_callers_with_shutdown():
    full = Queue(maxsize=1)
    full.put(1)
    putter = greenpatch.spawn(full.put, 2)
    empty = Queue()
    getter = greenpatch.spawn(empty.get)
    greenpatch.sleep(0.01)
    full.shutdown()
    with pytest.raises(queue.ShutDown):
        putter.wait()
    with pytest.raises(queue.ShutDown):
        full.put(3)
    assert full.get() == 1  # a graceful shutdown lets the queue drain
    with pytest.raises(queue.ShutDown):
        full.get()
    empty.shutdown(immediate=True)
    with pytest.raises(queue.ShutDown):
        getter.wait()
    dropped = Queue()
    dropped.put(1)
    dropped.put(2)
    dropped.shutdown(immediate=True)
    with pytest.raises(queue.ShutDown):
        dropped.get()
    dropped.join()  # the dropped items count as done


# -- SimpleQueue ----------------------------------------------------------------------------

def test_simple_queue_fifo_and_empty():
    q = SimpleQueue()
    for n in range(3):
        q.put(n)
    q.put_nowait(3)
    assert q.qsize() == 4 and not q.empty()
    assert [q.get(), q.get_nowait(), q.get(False), q.get(timeout=1)] == [0, 1, 2, 3]
    assert q.empty()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    begin = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    assert time.monotonic() - begin >= 0.045


def test_simple_queue_each_waiting_getter_gets_one_item():
    q = SimpleQueue()
    getters = [greenpatch.spawn(q.get) for _ in range(4)]
    greenpatch.sleep(0.01)
    for n in range(4):
        q.put(n)  # several puts before any getter runs
    greenpatch.sleep(0.05)
    ready = [g for g in getters if g.ready()]
    for getter in getters:
        getter.kill()
    assert sorted(g.wait() for g in ready) == [0, 1, 2, 3]


def test_simple_queue_put_from_a_real_thread_wakes_a_green_getter():
    q = SimpleQueue()
    timer = threading.Timer(0.05, q.put, args=("from a real thread",))
    timer.start()
    try:
        assert q.get(timeout=10) == "from a real thread"
    finally:
        timer.join()


def test_queue_shared_with_a_real_thread():
    q = Queue(maxsize=5)
    got = []

    def real_consumer():
        for _ in range(200):
            got.append(q.get(timeout=10))

    real = threading.Thread(target=real_consumer)
    real.start()
    for n in range(200):
        q.put(n, timeout=10)  # parks greenly while the real consumer lags
    real.join()
    assert got == list(range(200))


# -- under the patch --------------------------------------------------------------------------

def test_green_queue_exposes_every_public_name_of_queue():
    public = {name for name in dir(queue) if not name.startswith("_")}
    assert public <= set(dir(green_queue))
    assert all(hasattr(green_queue, name) for name in public)


QUEUE_SCENARIOS = [
    "queues_producer_consumer",
    "queue_timeouts_raise_the_stdlib_exceptions",
    "many_consumers_share_queues_in_one_os_thread",
    "reimported_queue_module_is_still_green",
    "freshly_imported_c_queue_module_is_green",
]


@pytest.fixture(scope="module")
def patched():
    return scenario_results(QUEUE_SCENARIOS)


@pytest.mark.parametrize("name", QUEUE_SCENARIOS)
def test_patched_queue(patched, name):
    passed, output = patched[name]
    assert passed, output
