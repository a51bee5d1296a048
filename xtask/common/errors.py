"""The one exception type that reaches the user as a single line."""


class XTaskError(Exception):
    """A problem with the user's input (params, data, checkpoint) rather than a bug.

    Entry points print ``str(err)`` on one line and exit non-zero; the message must name the
    file or key at fault and what was expected.
    """
