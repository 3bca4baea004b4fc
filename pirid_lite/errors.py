"""The one exception type for problems the user can fix: a bad setting, a bad file, a diverged run.

Library code raises :class:`UserError` with a message that names the file or setting, what was found and
what was expected; ``python -m pirid_lite`` prints it as ``error: <message>`` and exits with status 2
(``--debug`` or ``PIRID_DEBUG=1`` shows the traceback). Anything else is a bug and raises normally.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class UserError(ValueError):
    """Bad input (config value, file, dataset) or a run that cannot go on; the message is for the user.

    A ``ValueError`` so that callers which already catch ``ValueError`` for bad input keep working.
    """


class NonFiniteLossError(UserError):
    """A training loss became NaN or infinite (the run stops before saving the bad epoch)."""


@contextmanager
def user_error_from(*types: type[BaseException], prefix: str = "") -> Iterator[None]:
    """Re-raise ``types`` raised inside the block as :class:`UserError` (``prefix`` + their message on one
    line).

    For calls into code that reports bad input with plain ``ValueError``/``FileNotFoundError``; keep the
    block to that one call, so that a bug elsewhere still raises as itself.
    """
    try:
        yield
    except UserError:
        raise
    except types as error:
        message = " ".join(str(error).split())  # one line: torch lists mismatched keys over many
        raise UserError(prefix + (message if len(message) <= 400 else message[:400] + "…")) from error
