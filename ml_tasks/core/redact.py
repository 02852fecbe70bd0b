"""Secrets never leave the process in text: URLs with their password hidden, known secrets masked.

Every URL that goes into an error, a log line, a notification, a report, a tag or a manifest is
rendered by :func:`redact_url`, and every text that may hold one (an exception's message, a
notification) goes through :func:`redact` first.

SQLAlchemy's ``URL.render_as_string(hide_password=True)`` does this for a URL it can parse, but
the URL that leaks is usually the one it cannot parse (a typo in the port, an ``@`` in the
password), so the rules here work on the text itself:

* ``scheme://user:password@host`` → ``scheme://user:***@host``. The password runs to the *last*
  ``@`` of the URL, so an unescaped ``@`` in it hides the whole password rather than half.
* ``password=…`` (also ``passwd``, ``pwd``, ``sslpassword``), as in a query string or a libpq
  connection string, → ``password=***``.
* Any literal secret the caller knows (the password of the warehouse URL, the SMTP password) is
  replaced wherever it appears, in the forms it may take (as written, percent-decoded,
  percent-encoded): this catches what the two rules above cannot see, such as a driver's message
  that quotes a fragment of a malformed URL. Secrets shorter than :data:`MIN_SECRET_LENGTH` are
  only hidden by the rules: replacing every ``"ab"`` in a message would destroy it.

>>> redact_url("postgresql+psycopg://etl:s3cret@db:5432/warehouse")
'postgresql+psycopg://etl:***@db:5432/warehouse'
>>> redact_url("postgresql://etl:pa@ssword@db:54x2/w")      # SQLAlchemy cannot parse it
'postgresql://etl:***@db:54x2/w'
>>> redact("failed: host 'ssword@db' unknown", url_secrets("postgresql://etl:pa@ssword@db/w"))
"failed: host '***@db' unknown"
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

__all__ = ["MASK", "MIN_SECRET_LENGTH", "leaks", "password_has_at", "redact", "redact_url", "url_secrets"]

#: What a hidden secret reads as (SQLAlchemy's own mask).
MASK = "***"
#: Shorter known secrets are hidden only where a URL or ``password=`` shows them.
MIN_SECRET_LENGTH = 4

_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
# A URL inside free text: up to whitespace, a quote or an angle bracket.
_URL_IN_TEXT = re.compile(_SCHEME + r"""[^\s'"<>`]*""")
_URL = re.compile(rf"^({_SCHEME})(.*)$", re.DOTALL)
_PASSWORD_KEY = re.compile(
    r"""(?i)\b((?:ssl)?password|passwd|pwd)(\s*=\s*)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s&;,'")]+)""")


def redact_url(url: str) -> str:
    """``url`` with its password hidden; any text is accepted, parsable by SQLAlchemy or not.

    The password is what lies between the first ``:`` after the scheme (or after the start, in a
    URL that lost its ``://``) and the last ``@``.

    >>> redact_url("sqlite:////srv/warehouse.db")
    'sqlite:////srv/warehouse.db'
    >>> redact_url("postgresql+psycopg//etl:s3cret@db/w")      # no "://"
    'postgresql+psycopg//etl:***@db/w'
    >>> redact_url("postgresql://etl@db/w?sslmode=require&password=x1")
    'postgresql://etl@db/w?sslmode=require&password=***'
    """
    scheme, userinfo, rest = _split(url)
    if userinfo is not None:
        rest = f"{userinfo.partition(':')[0]}:{MASK}{rest}"
    return scheme + _PASSWORD_KEY.sub(_mask_value, rest)


def _split(url: str) -> tuple[str, str | None, str]:
    """(scheme with ``://``, user and password if there is a password, the rest from the last ``@``)."""
    match = _URL.match(url)
    scheme, rest = match.groups() if match is not None else ("", url)
    at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:
        return scheme, rest[:at], rest[at:]
    return scheme, None, rest


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The password of ``url`` in every form it may appear in a message, for :func:`redact`.

    That is the password up to the last ``@`` (what was meant) and up to the first (what
    SQLAlchemy and libpq read), each ``@``-separated fragment of it (a driver that read the
    URL wrongly quotes the rest as the host), ``password=`` values, each also percent-decoded
    and percent-encoded. Empty for a URL without a password.

    >>> url_secrets("postgresql://etl:pa%40ss@db/w")
    ('pa%40ss', 'pa@ss')
    """
    if not url:
        return ()
    found: set[str] = set()
    userinfo = _split(url)[1]
    if userinfo is not None:
        password = userinfo.partition(":")[2]
        found.update([password, *password.split("@")])
    for value in (m.group(3) for m in _PASSWORD_KEY.finditer(url)):
        found.add(value.strip("'\""))
    forms = {form for secret in found for form in (secret, unquote(secret), quote(unquote(secret), safe=""))}
    return tuple(sorted(secret for secret in forms if len(secret) >= MIN_SECRET_LENGTH))


def password_has_at(url: str) -> bool:
    """Whether the password of ``url`` holds an unescaped ``@``, which SQLAlchemy and libpq read
    as the end of the password (the rest then reads as the host). An ``@`` in the user name is
    read right, as long as the password has none.

    >>> password_has_at("postgresql://etl:pa@ss@db/w"), password_has_at("postgresql://etl:pa%40ss@db/w")
    (True, False)
    """
    userinfo = _split(url)[1]
    return userinfo is not None and "@" in userinfo.partition(":")[2]


def leaks(exc: BaseException, secrets: Iterable[str] = ()) -> bool:
    """Whether ``exc`` printed with its traceback and chained causes (as a task log shows it)
    would show a URL's password, a ``password=`` value or one of ``secrets``."""
    import traceback

    text = "".join(traceback.format_exception(exc))
    return redact(text, secrets) != text


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL's password, every ``password=`` value and each of ``secrets`` hidden.

    ``secrets`` are literal strings (see :func:`url_secrets`); those shorter than
    :data:`MIN_SECRET_LENGTH` are ignored. Longer secrets are replaced first, so a secret that
    contains another is hidden whole.
    """
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    text = _PASSWORD_KEY.sub(_mask_value, text)
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _mask_value(match: re.Match[str]) -> str:
    return f"{match.group(1)}{match.group(2)}{MASK}"
