"""Plain torch.nn networks: classifiers (take [0, 1] images, normalize inside), GAN networks."""

from advlab.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from advlab.nets.normalize import Normalize
from advlab.nets.perturbation import PerturbationGenerator
from advlab.nets.preact_resnet import PreActResNet18
from advlab.nets.small_cnn import SmallCNN
from advlab.nets.strided_cnn import StridedCNN

__all__ = [
    "DCGANDiscriminator",
    "DCGANGenerator",
    "Normalize",
    "PerturbationGenerator",
    "PreActResNet18",
    "SmallCNN",
    "StridedCNN",
]
