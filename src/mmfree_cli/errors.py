"""The one exception type for problems a user can cause and fix.

Library code raises `UserError("what is wrong — what to do")`; the CLI prints that one line and
exits with code 2. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (file, recipe, device, flag); the message names the fix."""

    exit_code = 2
