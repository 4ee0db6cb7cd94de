"""The one exception type for problems a user can fix (bad file, bad option, bad model)."""


class HydranetError(Exception):
    """A user-facing error: the message says what is wrong and where."""
