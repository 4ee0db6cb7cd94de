"""The one exception type for problems a user can fix (bad file, bad option, bad model)."""


class HydranetError(Exception):
    """A user-facing error: the message says what is wrong and where; ``problems`` lists its
    parts where there are several (a labels file's rows), for a dock to show one per line."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]
