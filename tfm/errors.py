"""The one exception type for mistakes a user can fix (a bad path, value or checkpoint).

The CLI prints its message as one line, with no traceback, and exits with status 2.
"""


class UserError(ValueError):
    """A problem in the user's input; the message names the bad value and what would be valid."""
