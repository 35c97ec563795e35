"""The one error type of the models layer."""

from sparseflow.errors import UserError


class ModelError(UserError, ValueError):
    """A bad model request: unknown name, unknown activation, unsupported option, bad shape.

    Messages are one line and name the valid choices, so a CLI can print them as they are.
    """
