"""Errors a user can act on. The CLI prints their message, without a traceback, and exits 2."""


class SwiperecError(RuntimeError):
    """Something the user can fix: the message says what happened and what to do."""
