"""Names every layer agrees on: the columns Refit adds to data, and which way each metric improves.

They live here, below every stage, so that the sampler, the trainer, the evaluation and the
gate can share them without importing each other.
"""

from __future__ import annotations

from typing import Final

#: Column holding each sampled row's inverse inclusion probability (the sampler writes it;
#: every metric and test weights rows by it).
WEIGHT: Final = "_weight"
#: Column naming the source stream a snapshot row came from (specs with several streams).
STREAM: Final = "_stream"
#: Name of the champion's recipe among a run's backtest results and the gate's references.
CHAMPION: Final = "champion"
#: Column of the champion's probabilities in a run's test predictions.
CHAMPION_COLUMN: Final = "p_champion"

#: Metrics a spec may select on or threshold, and whether a higher value is better.
HIGHER_IS_BETTER: Final[dict[str, bool]] = {
    "roc_auc": True, "pr_auc": True, "log_loss": False, "brier": False, "ece": False,
}
#: Metrics a champion comparison may name (accuracy is compared at the decision threshold).
COMPARABLE_METRICS: Final = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "accuracy")
