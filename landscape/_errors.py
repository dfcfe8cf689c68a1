"""The one exception a user can cause."""


class LandscapeError(ValueError):
    """A problem with the user's input: names the input and the fix.

    The command line prints the message as one line on stderr and exits with status 2.
    """
