"""Plain torch.nn networks. Classifiers take images in [0, 1] and normalize inside."""

from advlab.nets.normalize import Normalize
from advlab.nets.preact_resnet import PreActResNet18
from advlab.nets.small_cnn import SmallCNN

__all__ = ["Normalize", "PreActResNet18", "SmallCNN"]
