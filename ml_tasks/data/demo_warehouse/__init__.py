"""Seeded demo credit-default warehouse.

Refit needs a warehouse to retrain against before anyone connects a real one. This package
writes three tables that look and behave like a small consumer-lending book:

``customers``
    One row per customer: who they are (region, age, income, employment) and when they
    signed up.
``applications``
    One row per loan application: amount, term, purpose, channel, credit score and existing
    debt at application time.
``outcomes``
    Exactly one row per application: ``defaulted`` (0/1) and ``observed_at``, the moment the
    label became known, a uniform ``label_delay_days`` after the application.

The data is built to exercise what the pipeline is for:

* **Signal, not a giveaway.** A logistic regression on the raw columns reaches a ROC AUC of
  about 0.80 (0.77-0.85 depending on the period), far from 0.99.
* **Repeat customers.** Customers apply about ``applications_per_customer`` times, and a
  latent risk shared by all their applications makes earlier defaults predict later ones.
* **Drift.** Nominal incomes grow about 8 % a year; the ``mobile`` channel opens in month
  :data:`MOBILE_LAUNCH_MONTH` and is riskier than the others; debt-to-income, irrelevant at
  the start, becomes the strongest driver of default by the end, while the credit score
  loses some of its bite and partner-sourced loans turn from safe to risky. A model trained
  on months 1-10 scores about 0.03-0.04 ROC AUC lower on months 21-24 than one trained on
  months 11-20.
* **Reproducible.** The same settings always give byte-identical tables, and 10 million
  applications fit in memory and generate in seconds.

The modules, in the order the data flows:

=============== ===========================================================================
``settings``    :class:`DemoWarehouseSettings`: what to generate, from YAML, validated
``effects``     vocabularies, mixes and (drifting) effect sizes: every number that shapes it
``clock``       the data span as integer seconds, calendar months counted from 1
``population``  customers and applications: who applies, when, for what
``risk``        the log-odds of default and the draw of the labels
``generate``    :func:`generate_tables`: one seeded generator, a fixed order of draws, frames
``schema``      the SQL tables and their indexes
``load``        :func:`write_warehouse` and :func:`build_demo_warehouse`: one transaction
``summary``     :class:`WarehouseSummary`: what was written
=============== ===========================================================================

Examples
--------
>>> from ml_tasks.data.demo_warehouse import DemoWarehouseSettings, generate_tables
>>> tables = generate_tables(DemoWarehouseSettings(rows=1_000, seed=7))
>>> sorted(tables)
['applications', 'customers', 'outcomes']
>>> len(tables["applications"]) == len(tables["outcomes"]) == 1_000
True
"""

from ml_tasks.data.demo_warehouse.effects import MOBILE_LAUNCH_MONTH
from ml_tasks.data.demo_warehouse.generate import generate_tables
from ml_tasks.data.demo_warehouse.load import build_demo_warehouse, write_warehouse
from ml_tasks.data.demo_warehouse.schema import APPLICATIONS, CUSTOMERS, OUTCOMES
from ml_tasks.data.demo_warehouse.settings import DEFAULT_SETTINGS_PATH, DemoWarehouseSettings
from ml_tasks.data.demo_warehouse.summary import WarehouseSummary

__all__ = [
    "APPLICATIONS",
    "CUSTOMERS",
    "DEFAULT_SETTINGS_PATH",
    "MOBILE_LAUNCH_MONTH",
    "OUTCOMES",
    "DemoWarehouseSettings",
    "WarehouseSummary",
    "build_demo_warehouse",
    "generate_tables",
    "write_warehouse",
]
