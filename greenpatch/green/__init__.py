"""Green twins of standard library modules; each lists what it replaces in ``__implements__``."""
