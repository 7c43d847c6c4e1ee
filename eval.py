"""Evaluate a checkpoint: `python eval.py ckpt_path=...` (see configs/eval.yaml for every option)."""

import hydra
from omegaconf import DictConfig

from advlab.eval import run


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
