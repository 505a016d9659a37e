"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""


class RidgelineError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""

    exit_code = 2


class ProfileError(RidgelineError):
    """A profile file is missing, malformed, or from a newer schema."""


class DeviceError(RidgelineError):
    """The requested device does not exist or its driver is unusable."""


class Waived(Exception):
    """Raised inside a probe case: this case cannot run here, for this reason.

    The runner turns it into a waived record (a result, not a crash).
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
