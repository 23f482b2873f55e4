"""The error type for bad input: the command line prints its message, never a traceback."""


class UsageError(ValueError):
    """Bad input from the user (unknown env id, bad option value, mismatched run directory)."""
