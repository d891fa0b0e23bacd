"""greenpatch: make unmodified blocking code concurrent on green threads."""
from greenlet import GreenletExit, getcurrent

from greenpatch.greenthread import GreenThread, kill, sleep, spawn, spawn_after, spawn_n
from greenpatch.hub import BlockingInHubError, DeadlockError, get_hub
from greenpatch.offload import offload
from greenpatch.patcher import PatchWarning, is_patched, monkey_patch, original
from greenpatch.pool import GreenPool
from greenpatch.timeout import Timeout, with_timeout

__version__ = "0.1.0"
