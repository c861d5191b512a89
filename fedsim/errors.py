"""The one exception type for a user's mistake: the CLI prints it as one line and exits 2."""


class FedsimError(Exception):
    """Bad input (config, path, data file, name): the message says what, where and how to fix."""
