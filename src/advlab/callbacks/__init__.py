"""Lightning callbacks of advlab: adversarial evaluation, approximate certification, sample
grids, checkpoint policies."""

from advlab.callbacks.adversarial_eval import AdversarialEvalCallback
from advlab.callbacks.advgan_grid import AdvGANGrid
from advlab.callbacks.certified_accuracy import ApproximateCertifiedAccuracy
from advlab.callbacks.gan_samples import GANSampleGrid
from advlab.callbacks.optional_checkpoint import CheckpointIfMonitored

__all__ = [
    "AdvGANGrid",
    "AdversarialEvalCallback",
    "ApproximateCertifiedAccuracy",
    "CheckpointIfMonitored",
    "GANSampleGrid",
]
