"""Train a model: `python train.py model=robust` (see configs/train.yaml for every option)."""

import hydra
from omegaconf import DictConfig

from advlab.train import run


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()
