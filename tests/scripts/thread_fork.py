# os.fork() in a patched process while another green thread runs: in the child
# only the forking thread exists (the other is stopped, join() returns at once),
# new threads work, and the child exits without waiting for the parent's threads.
import greenpatch

greenpatch.monkey_patch()

import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

release = threading.Event()
other = threading.Thread(target=release.wait, name="other")
other.start()

pid = os.fork()
if pid == 0:
    try:
        assert threading.enumerate() == [threading.main_thread()], threading.enumerate()
        assert not other.is_alive()
        begin = time.monotonic()
        other.join()  # it does not exist in the child: must not wait
        assert time.monotonic() - begin < 1
        result = []
        fresh = threading.Thread(target=lambda: result.append(time.sleep(0.01) or "fresh"))
        fresh.start()
        fresh.join()
        assert result == ["fresh"]
    except BaseException:
        import traceback
        traceback.print_exc()
        os._exit(3)
    sys.exit(0)  # normal interpreter exit: threading._shutdown must not wait for "other"

_, status = os.waitpid(pid, 0)
release.set()
other.join(5)
assert not other.is_alive()
assert os.waitstatus_to_exitcode(status) == 0, status
print("@@ ok", flush=True)
