"""Secrets hidden in text: URL passwords (parsable or not), ``password=`` values, known literals."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from ml_tasks.core.redact import MASK, leaks, password_has_at, redact, redact_url, url_secrets

SECRET = "Kx9Canary7q"


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://etl:Kx9Canary7q@db:5432/warehouse",
    "postgresql://etl:Kx9Canary7q@db/w?sslmode=require",
    "mysql+pymysql://etl:Kx9%2FCanary7q@db/w",
    "http://user:Kx9Canary7q@mlflow:5000",
])
def test_a_url_sqlalchemy_parses_is_shown_as_sqlalchemy_shows_it_without_the_password(url):
    assert redact_url(url) == make_url(url).render_as_string(hide_password=True)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://etl:Kx9Canary7q@db:54x32/w", "postgresql+psycopg://etl:***@db:54x32/w"),
    ("postgresql://etl:Kx9@Canary7q@db/w", "postgresql://etl:***@db/w"),
    ("postgresql+psycopg//etl:Kx9Canary7q@db/w", "postgresql+psycopg//etl:***@db/w"),
    ("postgresql://etl@db/w?password=Kx9Canary7q&sslmode=require", "postgresql://etl@db/w?password=***&sslmode=require"),
    ("sqlite:////srv/refit/warehouse.db", "sqlite:////srv/refit/warehouse.db"),
    ("postgresql://etl@tenant:Kx9Canary7q@db/w", "postgresql://etl@tenant:***@db/w"),
])
def test_a_url_sqlalchemy_cannot_parse_still_has_its_whole_password_hidden(url, shown):
    assert redact_url(url) == shown


def test_free_text_has_every_url_password_and_password_value_hidden():
    text = ("warehouse URL 'postgresql://etl:Kx9Canary7q@db/w' failed; retried with "
            "host=db user=etl password='Kx9 Canary7q' and \"pwd=Kx9Canary7q\"; see https://sqlalche.me/e/20/e3q8")
    shown = redact(text)
    assert SECRET not in shown and "Canary7q" not in shown
    assert "'postgresql://etl:***@db/w'" in shown and f"password={MASK}" in shown
    assert "https://sqlalche.me/e/20/e3q8" in shown  # a URL without a password is left alone


def test_known_secrets_are_hidden_in_every_form_a_driver_may_quote_them():
    url = "postgresql://etl:Kx9Canary7q@Tail5zq@db/w"  # the '@' unescaped: drivers read host 'Tail5zq@db'
    secrets = url_secrets(url)
    assert redact("failed to resolve host 'Tail5zq@db'", secrets) == f"failed to resolve host '{MASK}@db'"
    encoded = url_secrets("postgresql://etl:Kx9%40Canary7q@db/w")
    assert redact("auth failed for Kx9@Canary7q and Kx9%40Canary7q", encoded) == f"auth failed for {MASK} and {MASK}"
    assert redact("nothing to hide: ab", ["ab"]) == "nothing to hide: ab"  # too short to mask as a literal
    assert url_secrets("sqlite:////srv/w.db") == () and url_secrets(None) == ()


def test_an_at_sign_in_the_password_is_told_from_one_in_the_user_name():
    assert password_has_at("postgresql://etl:Kx9@Canary7q@db/w")
    assert not password_has_at("postgresql://etl@tenant:Kx9Canary7q@db/w")
    assert not password_has_at("postgresql://etl:Kx9%40Canary7q@db/w")


def test_leaks_looks_at_the_whole_chain_an_exception_prints():
    try:
        try:
            raise OSError(f"cannot reach postgresql://etl:{SECRET}@db/w")
        except OSError as inner:
            raise RuntimeError("extract failed") from inner
    except RuntimeError as outer:
        assert leaks(outer) and leaks(outer, [SECRET])
        assert not leaks(RuntimeError("extract failed"), [SECRET])
