"""Lightning callbacks of advlab: sample grids, checkpoint policies."""

from advlab.callbacks.gan_samples import GANSampleGrid
from advlab.callbacks.optional_checkpoint import CheckpointIfMonitored

__all__ = ["CheckpointIfMonitored", "GANSampleGrid"]
