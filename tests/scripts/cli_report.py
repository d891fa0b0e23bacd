# Prints, as JSON, what a program sees of how it was started; the CLI tests run
# it under plain python and under python -m greenpatch and compare.
import json
import pickle
import sys


class Probe:
    pass


def patch_state():
    if "greenpatch.patcher" not in sys.modules:
        return None  # plain python: do not import greenpatch and change what is loaded
    from greenpatch.patcher import PATCHES, is_patched, original
    import socket
    state = {patch.flag: is_patched(patch.flag) for patch in PATCHES}
    state["socket.socket is the original"] = socket.socket is original("socket", "socket")
    return state


print(json.dumps({
    "__name__": __name__,
    "__file__": __file__,
    "__spec__": None if __spec__ is None else [__spec__.name, __spec__.origin],
    "__package__": __package__,
    "__cached__": __cached__,
    "__loader__": type(__loader__).__name__,
    "__doc__": __doc__,
    "__main__ is this module": sys.modules["__main__"].__dict__ is globals(),
    "pickles": type(pickle.loads(pickle.dumps(Probe()))) is Probe,
    "argv": sys.argv,
    "path[0]": sys.path[0],
    "patched": patch_state(),
}))
