"""Errors raised for weight files that cannot be loaded as they are."""


class WeightsError(ValueError):
    """A weight file is missing, corrupt, unsafe or does not fit the architecture.

    The message names the file and, where it applies, the offending keys and the fix.
    """
