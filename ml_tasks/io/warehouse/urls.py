"""The warehouse URL, parsed once, with errors that show it only with its password hidden.

A malformed URL is the one most likely to leak: SQLAlchemy cannot parse it, so it cannot hide its
password either, and the error that quotes it goes to the task log and the failure notification.
:func:`parse_url` quotes it through :func:`ml_tasks.core.redact.redact_url`, which works on the
text, and refuses an unescaped ``@`` in the password, which every driver would read as the end of
the password and the start of the host (and then quote the rest of the password as a host name).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml_tasks.core.redact import password_has_at, redact, redact_url, url_secrets

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["parse_url"]


def parse_url(url: str) -> URL:
    """The SQLAlchemy URL of the warehouse at ``url``.

    Raises
    ------
    ValueError
        ``url`` is not a SQLAlchemy URL, or its password holds an unescaped ``@``. The message
        shows the URL with its password hidden.
    """
    from sqlalchemy.engine import make_url

    shown = redact_url(url)
    if password_has_at(url):
        raise ValueError(f"warehouse URL {shown!r}: the password holds an unescaped '@', which ends it early "
                         "(the rest would be read as the host); expected each '@' in it written as %40")
    try:
        return make_url(url)
    except Exception as exc:  # ArgumentError, or ValueError from a port that is not a number
        raise ValueError(f"warehouse URL {shown!r} is not a valid SQLAlchemy URL: "
                         f"{redact(str(exc), url_secrets(url))}") from None
