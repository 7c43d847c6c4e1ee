"""Training methods of `RobustClassifier`, one class per file, picked with `method=<name>`."""

from advlab.methods.base import TrainingMethod, build_method
from advlab.methods.clean import Clean
from advlab.methods.consistency import Consistency
from advlab.methods.fgsm_rs import FGSMRS
from advlab.methods.free import FreeAT
from advlab.methods.gaussian import Gaussian
from advlab.methods.mart import MART
from advlab.methods.pgd import PGDAT
from advlab.methods.trades import TRADES

__all__ = [
    "FGSMRS",
    "MART",
    "PGDAT",
    "TRADES",
    "Clean",
    "Consistency",
    "FreeAT",
    "Gaussian",
    "TrainingMethod",
    "build_method",
]
