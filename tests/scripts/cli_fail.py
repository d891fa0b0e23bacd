# Fails with an uncaught exception two frames deep.
def inner():
    raise ValueError("broken on purpose")


def outer():
    inner()


outer()
