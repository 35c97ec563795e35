"""The one exception the data layer raises at its users."""

from sparseflow.errors import UserError


class DataError(UserError):
    """A dataset could not be found, fetched or parsed.

    The message is one line meant for people: the CLI prints it and exits with status 2.
    """
