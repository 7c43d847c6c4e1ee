"""eval.py and advlab.evaluate take models advlab did not train: a module from a config with a
state_dict, a TorchScript file, and a model object in Python."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import advlab
from advlab.errors import ConfigError
from advlab.eval import evaluate
from advlab.loading import normalized

TINY_NET_PY = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """Expects inputs normalized with mean 0.5, std 0.5 (as many published models do)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(),
                                  nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
'''
API_OVERRIDES = ["attack.steps=2", "suite.attacks.pgd.attack.steps=2",
                 "suite.attacks.square.attack.n_queries=10", "suite.eps_multiples=[0.0,1.0]",
                 "sanity.steps_factor=2"]  # fmt: skip


@pytest.fixture
def tiny_net_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "tiny_net_pkg.py").write_text(TINY_NET_PY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import tiny_net_pkg

    torch.manual_seed(0)
    return tiny_net_pkg.TinyNet()


def test_a_state_dict_of_a_plain_module_is_evaluated(compose_eval, tiny_net_module, tmp_path):
    weights = tmp_path / "weights.pt"
    # saved as DataParallel would: every key under `module.`
    torch.save({f"module.{k}": v for k, v in tiny_net_module.state_dict().items()}, weights)
    result = evaluate(compose_eval(
        "net._target_=tiny_net_pkg.TinyNet", f"weights={weights}", "normalize.mean=[0.5]",
        "normalize.std=[0.5]", "logger=none",
    ))  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["model"].startswith("tiny_net_pkg.TinyNet with weights")
    assert "normalized inside" in report["model"]
    assert result["num_samples"] == 12 and report["verdict"] == result["verdict"]
    # the same network, normalized by hand, gives the clean accuracy the report gives
    x, y = _eval_images(compose_eval)
    wrapped = normalized(tiny_net_module.eval(), [0.5], [0.5])
    with torch.no_grad():
        expected = (wrapped(x).argmax(1) == y).float().mean().item()
    assert report["clean_acc"] == pytest.approx(expected)


def test_a_torchscript_file_is_evaluated(compose_eval, tiny_net_module, tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.script(tiny_net_module.eval()).save(str(path))
    result = evaluate(compose_eval(f"torchscript={path}", "logger=none"))
    assert result["model"].startswith("TorchScript ")
    assert (tmp_path / "report.md").read_text().startswith(f"**{result['verdict']}")


def test_weights_that_do_not_fit_are_one_line(compose_eval, tiny_net_module, tmp_path) -> None:
    weights = tmp_path / "other.pt"
    torch.save(nn.Linear(3, 2).state_dict(), weights)
    with pytest.raises(ConfigError, match=r"^weights=.*other.pt do not fit tiny_net_pkg.TinyNet"):
        evaluate(compose_eval("net._target_=tiny_net_pkg.TinyNet", f"weights={weights}"))


def test_the_python_api_returns_the_report(tiny_net_module, tmp_path: Path) -> None:
    x = torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    model = normalized(tiny_net_module.eval(), [0.5], [0.5])
    with torch.no_grad():
        y = model(x).argmax(1)  # labels it gets right: 100% clean
    report = advlab.evaluate(
        model, (x, y), eps=0.3, attack="autoattack_fast", overrides=API_OVERRIDES,
        out_dir=tmp_path,
    )  # fmt: skip
    assert report.clean_acc == 1.0
    assert report.verdict == "TRUSTWORTHY" or report.verdict.startswith("SUSPECT: ")
    assert report.headline.label == "AutoAttack (apgd-ce+apgd-t)" and report.headline.eps == 0.3
    parsed = json.loads(report.to_json())
    assert parsed["robustbench"]["threat_model"] == "Linf" and parsed["robustbench"]["n_ex"] == 12
    assert (tmp_path / "report.md").exists()


def test_the_python_api_refuses_unnormalized_pixels_and_a_missing_budget(tiny_net_module):
    x, y = torch.rand(4, 1, 28, 28) * 2 - 1, torch.zeros(4, dtype=torch.long)
    with pytest.raises(ConfigError, match=r"needs images in \[0, 1\]"):
        advlab.evaluate(tiny_net_module, (x, y), eps=0.3)
    with pytest.raises(ConfigError, match=r"evaluate\(\) needs eps="):
        advlab.evaluate(tiny_net_module, (x.clamp(0, 1), y))


def _eval_images(compose_eval) -> tuple[torch.Tensor, torch.Tensor]:
    from advlab.eval import test_batches
    from advlab.utils import instantiate

    cfg = compose_eval("ckpt_path=unused")
    (x, y), *_ = test_batches(instantiate(cfg.data), 12, 12, torch.device("cpu"))
    return x, y
