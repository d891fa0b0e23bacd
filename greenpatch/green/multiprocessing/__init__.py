"""Green twins of ``multiprocessing`` submodules (``multiprocessing.connection``)."""
