"""InputError: an input the client sent cannot be used; the message says which and why."""

from __future__ import annotations


class InputError(Exception):
    """A bad input image: the prediction fails with this message, the worker carries on.

    `detail` says what is wrong ("larger than 30 MB"); `field` names the input
    ("image_input[2]") once the caller knows it, and prefixes the message.
    """

    def __init__(self, detail: str, field: str | None = None) -> None:
        self.detail = detail
        self.field = field
        super().__init__(f"{field}: {detail}" if field else detail)

    def at(self, field: str) -> InputError:
        """The same error, naming the input it came from."""
        return InputError(self.detail, field)
