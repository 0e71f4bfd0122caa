"""The one error type the CLI turns into a clean message and exit code 2 (never a traceback)."""


class SteepError(Exception):
    """A problem the user can fix. The message names what is wrong and how to fix it."""

    exit_code = 2
