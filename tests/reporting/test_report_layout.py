"""The gating report as the person on call sees it: a real report, loaded in a real headless
Chromium with a 1280 px wide window (issue 15: readable at 1280 px).

Two real runs (``pipeline.run_all``) on the tiny demo warehouse: the first registers champion
v1, the second gates a challenger against it with a spec copy whose slices are small enough to
be tested and whose ROC AUC bar no model reaches, so the report has every section at once: the
failing champion, paired comparisons, slice checks, fold wins and guardrails.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from ml_tasks import pipeline
from ml_tasks.core.settings import REPO_ROOT
from tests.conftest import DEMO_SPEC, isolated_env

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH = 1280


@contextmanager
def chromium(width: int) -> Iterator:
    """Debian's headless Chromium and ChromeDriver with a window ``width`` px wide."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("Chromium and ChromeDriver are missing: `make system-deps` installs Debian's chromium and "
                    "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", f"--window-size={width},900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def report_html(tmp_path_factory, tiny_warehouse_url) -> Path:
    """The report of a run gated against a champion that fails its own bars, with tested slices."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        home = tmp_path_factory.mktemp("layout")
        isolated_env(monkeypatch, home / "refit")
        monkeypatch.setenv("REFIT_WAREHOUSE_URL", tiny_warehouse_url)
        first = pipeline.run_all(str(DEMO_SPEC), "2024-03-01", sample_size=2_000, candidates=["logistic_baseline"])
        assert first["champion_version"] == "1"
        include = home / "include"
        shutil.copytree(REPO_ROOT / "include", include)
        spec_file = include / "models" / DEMO_SPEC.name
        spec = yaml.safe_load(spec_file.read_text())
        spec["acceptance"]["thresholds"]["roc_auc"] = {"min": 0.99}
        spec["acceptance"]["slices"]["min_size"] = 10
        spec_file.write_text(yaml.safe_dump(spec))
        monkeypatch.setenv("REFIT_INCLUDE_DIR", str(include))
        report = pipeline.run_all(str(spec_file), "2024-06-01", sample_size=4_000, candidates=["logistic_baseline"])
        yield Path(report["html_uri"])


#: Each table's width against its container's, and the page's against the window's.
MEASURE = """
const table = document.getElementById(arguments[0]);
const box = table.parentElement;
return {window: window.innerWidth, page: document.documentElement.scrollWidth,
        table: Math.ceil(table.getBoundingClientRect().width), scroll: box.scrollWidth, client: box.clientWidth};
"""

#: {first cell: {header: cell text}} of a table's rows that have a cell under every header.
CELLS = """
const table = document.getElementById(arguments[0]);
const headers = Array.from(table.querySelectorAll('th')).map(th => th.textContent.trim());
const rows = {};
for (const tr of table.querySelectorAll('tr')) {
  const cells = Array.from(tr.querySelectorAll('td'));
  if (cells.length !== headers.length) continue;
  rows[cells[0].textContent.trim()] = Object.fromEntries(cells.map((td, i) => [headers[i], td.textContent.trim()]));
}
return rows;
"""


def test_the_checks_and_slices_tables_fit_a_1280_px_window_without_scrolling_sideways(report_html):
    with chromium(WIDTH) as driver:
        driver.get(report_html.as_uri())
        measured = {table: driver.execute_script(MEASURE, table) for table in ("checks", "slices", "metrics")}
        headers = [th.text.lower() for th in driver.find_elements("css selector", "#checks th")]

    assert measured["checks"]["window"] == WIDTH
    for table, sizes in measured.items():
        assert sizes["scroll"] <= sizes["client"] and sizes["table"] <= sizes["client"], (table, sizes)
        assert sizes["page"] <= sizes["window"], (table, sizes)
    assert "reason" not in headers  # the reason goes under its row


def test_each_check_reason_is_under_its_row_and_the_slices_show_the_checks_p_values(report_html):
    with chromium(WIDTH) as driver:
        driver.get(report_html.as_uri())
        checks, slices = driver.execute_script(CELLS, "checks"), driver.execute_script(CELLS, "slices")
        reasons = driver.execute_script(
            "return Array.from(document.querySelectorAll('#checks tbody.check')).map(b => "
            "[b.querySelector('tr.values td').textContent.trim(), b.querySelector('tr.reason').textContent.trim()])")

    tested = {label: row for label, row in slices.items() if row["p-value"] != "–"}
    assert tested, "the fixture's slices are small enough to be tested"
    for label, row in tested.items():
        [check] = [c for name, c in checks.items() if name.startswith(f"slice:{label}:")]
        assert row["p-value"] == check["p-value"], label
        adjusted = next(header for header in check if "adjusted" in header)
        assert row.get("adjusted p") == check[adjusted], label
    assert reasons and all(name and reason for name, reason in reasons)
    assert any(name.startswith("champion:") for name, _ in reasons)


def test_a_champion_failing_its_bars_is_the_first_thing_under_the_verdict(report_html):
    with chromium(WIDTH) as driver:
        driver.get(report_html.as_uri())
        after_banner = driver.execute_script("return document.getElementById('verdict').nextElementSibling.id")
        section = driver.find_element("id", "champion-health").text

    assert after_banner == "champion-health"
    assert "Champion v1 fails its own bars" in section and "roc_auc" in section and "0.9900" in section
    assert "degraded_champion: alert" in section
