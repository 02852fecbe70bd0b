"""The PyTorch candidate (family ``torch_mlp``): an MLP over scaled numerics and categorical
embeddings, one module per concern, in the order a fit uses them:

===============  ==============================================================================
params           the spec's ``params``: names, defaults, checks (``TorchMLPParams``)
device           which device trains, and the peak memory it took
encoding         feature frame -> arrays, fitted on the training rows (``FeatureEncoder``)
net              the network (``TabularMLP``), its logits and weighted loss
batches          the data path: resident or streamed batches, the validation rows
checkpoint       the per-epoch checkpoint file, its fingerprint and when a fit resumes it
loop             the optimiser, the step, one epoch, early stopping
checks           the one-batch check before training (``TrainingCheckError``)
warmstart        fine-tuning from a champion's weights and encoder
candidate        ``TorchMLPCandidate``: fit, predict, pickle
===============  ==============================================================================

Importing this package imports torch; :mod:`ml_tasks.models` reaches it only when a spec asks
for the family. A logged model is a (cloud)pickle of a fitted ``TorchMLPCandidate``, which holds
a ``TorchMLPParams``, a ``FeatureEncoder`` and a ``TabularMLP``. Models pickled before this
package was split name those classes under ``ml_tasks.models.network`` (and, before the package
layout, ``ml_tasks.torch_mlp``, which :mod:`ml_tasks.registry.legacy_names` maps here), so the
four stay exported here, as do the checkpoint file's name and functions the trainer relies on.
"""

from ml_tasks.models.network.candidate import TorchMLPCandidate
from ml_tasks.models.network.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ml_tasks.models.network.checks import TrainingCheckError
from ml_tasks.models.network.encoding import FeatureEncoder
from ml_tasks.models.network.net import TabularMLP
from ml_tasks.models.network.params import TorchMLPParams

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "FeatureEncoder", "TabularMLP", "TorchMLPCandidate", "TorchMLPParams",
    "TrainingCheckError", "load_checkpoint", "save_checkpoint",
]
