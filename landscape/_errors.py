"""The one exception a user can cause, and its kind for a loss that is not finite."""


class LandscapeError(ValueError):
    """A problem with the user's input: names the input and the fix.

    The command line prints the message as one line on stderr and exits with status 2.
    """


class NonFiniteLoss(LandscapeError):
    """The loss became NaN or infinite where a method went: that path is not below any level.

    Valley counting treats the pair as not joined and goes on; a single ``connect`` reports it.
    """
