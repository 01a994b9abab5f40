"""The one exception type for mistakes a user can fix.

The CLI prints a `UserError` as a single line on stderr and exits with status 1;
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, worded as what to do about it."""
