"""A warehouse URL that cannot be used is named with its password hidden, never echoed whole."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from ml_tasks.io.warehouse import available_engines, stream_query
from ml_tasks.io.warehouse.postgres import psycopg_connect
from ml_tasks.io.warehouse.urls import parse_url

SECRET = "Kx9Canary7q"


@pytest.mark.parametrize(("url", "message"), [
    (f"postgresql+psycopg://etl:{SECRET}@db:54x32/w",
     r"warehouse URL 'postgresql\+psycopg://etl:\*\*\*@db:54x32/w' is not a valid SQLAlchemy URL: invalid literal"),
    (f"postgresql+psycopg//etl:{SECRET}@db/w",
     r"warehouse URL 'postgresql\+psycopg//etl:\*\*\*@db/w' is not a valid SQLAlchemy URL: Could not parse"),
    (f"postgresql+psycopg://etl:{SECRET}@Tail5zq@db/w",
     r"warehouse URL 'postgresql\+psycopg://etl:\*\*\*@db/w': the password holds an unescaped '@'.*as %40"),
], ids=["port is not a number", "no scheme separator", "unescaped @ in the password"])
def test_an_unusable_warehouse_url_is_named_with_its_password_hidden(url, message):
    for attempt in (lambda: parse_url(url), lambda: available_engines(url),
                    lambda: stream_query(url, "SELECT 1", {}, {})):
        with pytest.raises(ValueError, match=message) as failure:
            attempt()
        assert SECRET not in str(failure.value) and "Tail5zq" not in str(failure.value)
        assert failure.value.__cause__ is None
        assert failure.value.__context__ is None or failure.value.__suppress_context__


def test_an_at_sign_in_the_user_name_or_an_escaped_one_in_the_password_is_read_as_written():
    assert parse_url("postgresql://etl@tenant:pa%40ss@db/w").password == "pa@ss"
    assert parse_url("postgresql://etl@tenant:pa%40ss@db/w").username == "etl@tenant"


def test_postgres_engines_connect_with_a_percent_encoded_password(postgres_url):
    # The local server trusts local connections: the password is accepted and ignored, but it
    # must reach libpq decoded, or the connection string would be malformed.
    url = make_url(postgres_url).set(password=f"{SECRET}@/:?").render_as_string(hide_password=False)
    assert "%40" in url
    with psycopg_connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
