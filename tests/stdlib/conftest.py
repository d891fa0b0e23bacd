# Only test_runner.py here is a pytest module; the rest is the runner, its child
# bootstrap and data.  CPython's own test modules are run by `python -m tests.stdlib`.
collect_ignore_glob = ["bootstrap.py", "runner.py", "__main__.py", "known/*", "results/*"]
