"""The demo book's vocabularies, mixes and effect sizes: every number that shapes the data.

Categorical columns are drawn as indexes into the vocabularies below and turned into text only
when the frames are assembled. Logit effects are on the log-odds scale; the intercept is solved
for afterwards (:func:`~ml_tasks.data.demo_warehouse.risk.draw_defaults`), so only differences
between levels matter.

Drift is written as pairs ``(value at the start, value at the end of the span)``, interpolated
linearly in time by :func:`~ml_tasks.data.demo_warehouse.risk.ramp`. Together they cost a model
trained on the first ten months about 0.03-0.04 ROC AUC on the last four months, against one
trained on months 11-20.
"""

from __future__ import annotations

import numpy as np

#: First month (1-based) in which the ``mobile`` channel takes applications.
MOBILE_LAUNCH_MONTH = 12

# ---------------------------------------------------------------------------------------------
# Customers
# ---------------------------------------------------------------------------------------------

REGIONS = np.array(["north", "south", "east", "west", "central"], dtype=object)
REGION_P = np.array([0.22, 0.21, 0.19, 0.18, 0.20])
REGION_LOG_INCOME = np.array([0.04, -0.10, 0.00, 0.12, -0.03])

#: Nominal incomes grow this much a year (the income drift).
INCOME_GROWTH_PER_YEAR = 0.08

# ---------------------------------------------------------------------------------------------
# Applications
# ---------------------------------------------------------------------------------------------

PURPOSES = np.array(["car", "home", "education", "debt_consolidation", "other"], dtype=object)
PURPOSE_P = np.array([0.26, 0.14, 0.10, 0.30, 0.20])
PURPOSE_MEDIAN_AMOUNT = np.array([18_000.0, 45_000.0, 14_000.0, 12_000.0, 5_000.0])
PURPOSE_LOGIT = np.array([-0.10, -0.30, 0.15, 0.30, 0.10])

#: Requested amounts grow this much a year.
AMOUNT_GROWTH_PER_YEAR = 0.03

TERMS = np.array([12, 24, 36, 60])
# Rows follow PURPOSES: big tickets are financed over longer terms.
TERM_P_BY_PURPOSE = np.array(
    [
        [0.05, 0.20, 0.45, 0.30],
        [0.02, 0.08, 0.30, 0.60],
        [0.10, 0.30, 0.40, 0.20],
        [0.10, 0.35, 0.40, 0.15],
        [0.45, 0.35, 0.15, 0.05],
    ]
)
TERM_LOGIT = np.array([-0.30, -0.10, 0.05, 0.30])

CHANNELS = np.array(["branch", "web", "partner", "mobile"], dtype=object)
PARTNER = 2  # index of "partner" in CHANNELS
CHANNEL_P_BEFORE_MOBILE = np.array([0.35, 0.45, 0.20])
CHANNEL_LOGIT = np.array([-0.20, 0.00, 0.00, 0.65])  # partner's effect drifts, see PARTNER_LOGIT
# Mobile's share of applications ramps linearly from launch to the end of the span.
MOBILE_SHARE = (0.10, 0.35)

# ---------------------------------------------------------------------------------------------
# Drift of the default risk
# ---------------------------------------------------------------------------------------------

# Debt-to-income (log-odds per unit of centred log DTI): irrelevant at first, the strongest
# single driver by the end.
DTI_SLOPE = (0.0, 1.8)
# Log-odds per credit-score point: scores inflate and lose some of their bite.
SCORE_SLOPE = (-0.011, -0.005)
# Partner-sourced loans start as the safest and end nearly as risky as mobile: the partner
# network grew and its vetting loosened.
PARTNER_LOGIT = (-0.35, 0.55)
# Offsets part of the risk that mobile and debt add over time, so the monthly default rate
# rises gently (about 5 % to 7 % at the defaults) rather than doubling.
TREND = (0.0, -0.4)
