"""The one exception type the CLI turns into a one-line error message.

Anything the user can cause (bad input, missing file, unreachable server) is raised as
`DataError` with a message that names what and where; `cli.main` prints it on one line
and exits non-zero. Any other exception is a bug and is reported the same way (without a
traceback unless KUBETRAIN_DATA_DEBUG=1), so a user never sees a traceback.
"""

from __future__ import annotations


class DataError(Exception):
    """A user-facing error: the message is printed as is, on one line."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        """Process exit code for this error (always non-zero)."""
