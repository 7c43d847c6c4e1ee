"""Small configs and models shared by the unit tests of RobustClassifier and the methods."""

from __future__ import annotations

import torch

from advlab.models import RobustClassifier

NET = {"_target_": "advlab.nets.SmallCNN", "channels": [8, 16], "hidden": 32}
PGD = {"_target_": "torchattacks.PGD", "norm": "Linf", "eps": 0.3, "alpha": 0.1, "steps": 3,
       "random_start": True}  # fmt: skip
TPGD = {"_target_": "torchattacks.TPGD", "norm": "Linf", "eps": 0.3, "alpha": 0.1, "steps": 3}
FFGSM = {"_target_": "torchattacks.FFGSM", "norm": "Linf", "eps": 0.3, "alpha": 0.375}
FREE = {"_target_": "advlab.attacks.free.FreePerturbation", "norm": "Linf", "eps": 0.3,
        "alpha": 0.15}  # fmt: skip
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01}
ONE_CYCLE = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "_partial_": True, "max_lr": 0.01}
METHODS = {
    "clean": {"_target_": "advlab.methods.Clean"},
    "pgd": {"_target_": "advlab.methods.PGDAT", "attack": PGD},
    "fgsm_rs": {"_target_": "advlab.methods.FGSMRS", "attack": FFGSM},
    "trades": {"_target_": "advlab.methods.TRADES", "attack": TPGD},
    "mart": {"_target_": "advlab.methods.MART", "attack": PGD},
    "free": {"_target_": "advlab.methods.FreeAT", "attack": FREE, "replays": 4},
    "gaussian": {"_target_": "advlab.methods.Gaussian", "sigma": 0.25},
    "consistency": {"_target_": "advlab.methods.Consistency", "sigma": 0.25},
}


def method(name: str, **knobs) -> dict:
    return {**METHODS[name], **knobs}


def make_classifier(name: str = "pgd", knobs: dict | None = None, **kwargs) -> RobustClassifier:
    torch.manual_seed(0)
    args = {"net": NET, "method": method(name, **(knobs or {})), "optimizer": ADAM, **kwargs}
    return RobustClassifier(**args)


def fixed_batch(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 28, 28, generator=generator)
    return x, torch.randint(0, 10, (n,), generator=generator)
