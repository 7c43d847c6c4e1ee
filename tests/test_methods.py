"""Training methods: each lowers its own adversarial loss, checks its knobs, and computes the
objective its paper defines; no code picks a method by comparing its name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlab.errors import ConfigError
from advlab.methods import MART, TRADES, Consistency, Gaussian, build_method
from advlab.methods.consistency import consistency_loss
from advlab.methods.fgsm_rs import local_linearity_error
from advlab.methods.mart import mart_loss
from advlab.nets import SmallCNN
from tests.builders import FFGSM, PGD, TPGD, fixed_batch, make_classifier, method
from tests.conftest import config_options

REPO_ROOT = Path(__file__).resolve().parents[1]
AUTOMATIC = ["clean", "pgd", "fgsm_rs", "trades", "mart", "gaussian", "consistency"]


def adversarial_loss(model, x: torch.Tensor, y: torch.Tensor) -> float:
    torch.manual_seed(3)  # the same random start before and after the steps
    attack = model.method.attack(model.net)
    x_adv = attack(x, y) if attack is not None else x
    with torch.no_grad():
        return F.cross_entropy(model(x_adv), y).item()


@pytest.mark.parametrize("name", AUTOMATIC)
def test_training_steps_lower_the_loss_under_the_methods_own_attack(name: str) -> None:
    model = make_classifier(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = fixed_batch()
    losses = [adversarial_loss(model, x, y)]
    for _ in range(5):
        loss, logits = model.method.loss(model.net, model.method.attack(model.net), x, y)
        assert logits.shape == (32, 10)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(adversarial_loss(model, x, y))
    assert losses[1] < losses[0], losses
    assert losses[-1] < losses[0] - 0.1, losses


@pytest.mark.parametrize("name", config_options("method"))
def test_every_method_config_builds_its_class(compose_train, name: str) -> None:
    cfg = compose_train(f"method={name}")
    built = build_method(cfg.model.method)
    assert type(built).__name__ == cfg.model.method._target_.rsplit(".", 1)[-1]
    assert built.manual_optimization == (name == "free")


def test_a_misspelled_knob_is_an_error_that_lists_the_knobs() -> None:
    with pytest.raises(
        ConfigError,
        match=r"model.method \(TRADES\) has no knob betta; its knobs: attack, beta, "
        r"eps_warmup_epochs",
    ):
        build_method(method("trades", betta=3.0))


def test_a_misspelled_knob_from_the_command_line_fails_before_training(compose_train) -> None:
    from advlab.train import train

    cfg = compose_train("method=mart", "+model.method.lamda=5")
    with pytest.raises(ConfigError, match=r"MART\) has no knob lamda"):
        train(cfg)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (
            {"_target_": "advlab.methods.PGDAT"},
            r"model.method \(PGDAT\) needs attack: set model.method.attack",
        ),
        ({"_target_": "advlab.methods.Clean", "attack": PGD}, r"unexpected|has no knob attack"),
        (method("trades", beta=-1.0), r"model.method.beta must be >= 0, got -1.0"),
        (method("mart", beta=float("nan")), r"model.method.beta must be >= 0, got nan"),
        (method("pgd", eps_warmup_epochs=-1), r"model.method.eps_warmup_epochs must be >= 0"),
        (method("fgsm_rs", linearity_fraction=0), r"linearity_fraction must be in \(0, 1\]"),
        (method("free", attack=FFGSM), r"method=free needs attack/free .*got torchattacks.FFGSM"),
        (method("free", replays=0), r"model.method.replays must be an integer >= 1, got 0"),
        (method("pgd", attack={**PGD, "eps": 3}), r"model.method.attack.eps=3 is outside"),
        ({"_target_": "advlab.methods.Nope"}, r"model.method._target_='advlab.methods.Nope' is"),
    ],
)
def test_bad_method_settings_are_one_line_errors(cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_method(cfg)


def test_no_code_picks_a_method_by_comparing_its_name() -> None:
    compare = re.compile(r"""method[\w.\]\[\"']*\s*(==|!=|\bin\b|\bnot in\b)\s*[\(\[\{"']""")
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for path in (REPO_ROOT / "src").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if compare.search(line)
    ]
    assert offenders == []


def test_trades_is_clean_cross_entropy_plus_beta_times_kl() -> None:
    torch.manual_seed(0)
    net = SmallCNN(channels=(8, 16), hidden=32)
    x, y = fixed_batch(8)
    x_adv = (x + 0.1).clamp(0, 1)
    clean, adv = net(x), net(x_adv)
    kl = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="batchmean")
    expected = F.cross_entropy(clean, y) + 2.5 * kl
    loss, logits = TRADES(TPGD, beta=2.5).loss(net, lambda *_: x_adv, x, y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.equal(logits, adv)


def _mart_as_the_authors_wrote_it(logits, logits_adv, y, beta):
    """Wang et al.'s released mart_loss, after its attack (argsort for the runner-up class)."""
    adv_probs = F.softmax(logits_adv, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(
        torch.log(1.0001 - adv_probs + 1e-12), new_y
    )
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, y.unsqueeze(1).long()).squeeze()
    kl = torch.nn.KLDivLoss(reduction="none")
    loss_robust = (1.0 / len(y)) * torch.sum(
        torch.sum(kl(torch.log(adv_probs + 1e-12), nat_probs), dim=1) * (1.0000001 - true_probs)
    )
    return loss_adv + float(beta) * loss_robust


@pytest.mark.parametrize("beta", [0.0, 6.0])
def test_mart_loss_matches_the_authors_code(beta: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(64, 10, generator=generator)
    logits_adv = logits + torch.randn(64, 10, generator=generator)
    y = torch.randint(0, 10, (64,), generator=generator)
    expected = _mart_as_the_authors_wrote_it(logits, logits_adv, y, beta)
    assert mart_loss(logits, logits_adv, y, beta).item() == pytest.approx(expected.item(), 1e-6)


def test_mart_spends_its_kl_term_on_images_the_clean_prediction_gets_wrong() -> None:
    y = torch.tensor([0, 1])
    confident = torch.tensor([[20.0, 0, 0], [0, 20.0, 0]])  # right, p_y ~ 1: weight ~ 0
    wrong = torch.tensor([[0, 20.0, 0], [20.0, 0, 0]])  # wrong, p_y ~ 0: weight ~ 1
    shifted = torch.tensor([[0, 0, 5.0], [0, 0, 5.0]])
    kl_weight_right = mart_loss(confident, shifted, y, 6.0) - mart_loss(confident, shifted, y, 0.0)
    kl_weight_wrong = mart_loss(wrong, shifted, y, 6.0) - mart_loss(wrong, shifted, y, 0.0)
    assert kl_weight_right.item() < 1e-4
    assert kl_weight_wrong.item() > 10


def test_mart_gradient_stays_bounded_under_cpu_bf16_autocast() -> None:
    """A runner-up probability of 0.999 rounds to 1 in bfloat16; the loss must not see it so, or
    trainer.precision=bf16-mixed diverges."""
    torch.manual_seed(0)
    head = nn.Linear(4, 3)
    features = torch.randn(2, 4)
    y = torch.tensor([0, 1])
    with torch.no_grad():  # the attacked image: class 2 at ~0.999, the true class far below
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, 0.0, 8.0]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(features)
        loss = mart_loss(logits, logits, y, 6.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert head.bias.grad.abs().max().item() < 1e4  # 3e8 when the loss ran in bfloat16


def test_mart_trains_on_its_attacks_examples() -> None:
    torch.manual_seed(0)
    net = SmallCNN(channels=(8, 16), hidden=32)
    x, y = fixed_batch(8)
    x_adv = (x - 0.1).clamp(0, 1)
    loss, logits = MART(PGD, beta=6.0).loss(net, lambda *_: x_adv, x, y)
    assert torch.equal(logits, net(x_adv))
    assert loss.item() == pytest.approx(mart_loss(net(x), net(x_adv), y, 6.0).item(), rel=1e-6)


# ---- FGSM-RS's ELLE penalty -------------------------------------------------------------------
def test_no_ball_or_no_curvature_means_no_linearity_error() -> None:
    x, y = fixed_batch(8)
    net = SmallCNN(channels=(8, 16), hidden=32)
    assert local_linearity_error(net, x, y, eps=0.0).item() == pytest.approx(0.0, abs=1e-10)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    # cross-entropy of a linear net is convex, not linear: small but not zero; a constant is zero
    constant = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    torch.nn.init.zeros_(constant[1].weight)
    assert local_linearity_error(constant, x, y, eps=0.3).item() == pytest.approx(0, abs=1e-10)
    assert local_linearity_error(linear, x, y, eps=0.3).item() >= 0


def test_linearity_error_grows_with_the_radius() -> None:
    torch.manual_seed(0)
    net = SmallCNN(channels=(8, 16), hidden=32)
    x, y = fixed_batch(16)
    small = local_linearity_error(net, x, y, eps=0.05).item()
    large = local_linearity_error(net, x, y, eps=0.5).item()
    assert large > 10 * small > 0


def test_fgsm_rs_adds_the_weighted_penalty_on_the_first_images(monkeypatch) -> None:
    model = make_classifier("fgsm_rs", {"linearity_weight": 10.0, "linearity_fraction": 0.25})
    seen = {}

    def fake_error(net, x, y, eps, fraction):
        seen.update(eps=eps, fraction=fraction, n=len(x))
        return torch.tensor(0.5)

    monkeypatch.setattr("advlab.methods.fgsm_rs.local_linearity_error", fake_error)
    monkeypatch.setattr(model, "log", lambda *args, **kwargs: None)
    x, y = fixed_batch(16)
    torch.manual_seed(4)
    loss, _ = model.method.training_step(model, x, y, 0)
    torch.manual_seed(4)  # the same random start
    plain = F.cross_entropy(model(model.method.attack(model.net)(x, y)), y)
    assert loss.item() == pytest.approx(plain.item() + 10.0 * 0.5, rel=1e-6)
    assert seen == {"eps": 0.3, "fraction": 0.25, "n": 16}


# ---- noise training for randomized smoothing --------------------------------------------------
def _consistency_as_the_authors_wrote_it(chunks, lbd, eta):
    """Jeong & Shin's released consistency_loss (loss='default'), on a list of logit chunks."""
    softmax = [F.softmax(logit, dim=1) for logit in chunks]
    avg = sum(softmax) / len(softmax)
    kl = [F.kl_div(F.log_softmax(logit, dim=1), avg, reduction="none").sum(1) for logit in chunks]
    entropy = (-avg * torch.log(avg.clamp(min=1e-20))).sum(1)
    return (lbd * sum(kl) / len(kl) + eta * entropy).mean()


@pytest.mark.parametrize(("draws", "lbd", "eta"), [(2, 20.0, 0.5), (4, 5.0, 0.0)])
def test_consistency_loss_matches_the_authors_code(draws: int, lbd: float, eta: float) -> None:
    logits = 4 * torch.randn(draws * 16, 10, generator=torch.Generator().manual_seed(0))
    expected = _consistency_as_the_authors_wrote_it(logits.chunk(draws), lbd, eta)
    assert consistency_loss(logits, draws, lbd, eta).item() == pytest.approx(expected.item(), 1e-6)


def test_consistency_trains_on_noisy_copies_with_cross_entropy_plus_the_regularizer() -> None:
    torch.manual_seed(0)
    net = SmallCNN(channels=(8, 16), hidden=32)
    x, y = fixed_batch(8)
    method = Consistency(sigma=0.5, noise_draws=3, lbd=10.0, eta=0.5)
    torch.manual_seed(7)
    loss, logits = method.loss(net, None, x, y)
    torch.manual_seed(7)  # the same noise: one draw per copy, copy-major
    copies = torch.cat([x] * 3)
    expected_logits = net(copies + 0.5 * torch.randn_like(copies))
    expected = F.cross_entropy(expected_logits, y.repeat(3)) + consistency_loss(
        expected_logits, 3, 10.0, 0.5
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(logits, expected_logits[:8])


def test_gaussian_is_cross_entropy_under_noise_of_its_sigma() -> None:
    torch.manual_seed(0)
    net = SmallCNN(channels=(8, 16), hidden=32)
    x, y = fixed_batch(8)
    torch.manual_seed(3)
    loss, logits = Gaussian(sigma=0.25).loss(net, None, x, y)
    torch.manual_seed(3)
    noisy = net(x + 0.25 * torch.randn_like(x))
    assert loss.item() == pytest.approx(F.cross_entropy(noisy, y).item(), rel=1e-6)
    assert torch.equal(logits, noisy)
    assert not torch.allclose(logits, net(x))


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (method("gaussian", sigma=0.0), r"^model.method.sigma must be > 0 .*got 0.0$"),
        (method("gaussian", sigma=-1), r"^model.method.sigma must be > 0"),
        (method("consistency", sigma="big"), r"^model.method.sigma must be a number > 0"),
        (
            method("consistency", noise_draws=1),
            r"^model.method.noise_draws must be an integer >= 2",
        ),
        (method("consistency", lbd=-1.0), r"^model.method.lbd must be >= 0, got -1.0"),
        (method("consistency", eta=float("nan")), r"^model.method.eta must be >= 0, got nan"),
        (method("gaussian", attack=PGD), r"has no knob attack"),
        ({"_target_": "advlab.methods.Gaussian"}, r"\(Gaussian\) needs sigma: set model.method"),
    ],
)
def test_bad_noise_training_knobs_are_one_line_errors(cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_method(cfg)
