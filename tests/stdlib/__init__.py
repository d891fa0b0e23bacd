"""CPython's own test suite under a monkey patch: the conformance runner of issue 7 (see README.md)."""
