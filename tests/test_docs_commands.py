"""Every `python train.py ...` / `python eval.py ...` command written in README.md and docs/
composes with Hydra (composition only, nothing runs), so a renamed config or knob cannot leave a
stale command in the docs.

YAML blocks headed by a `# configs/<group>/<name>.yaml` path the repository does not have (the
worked examples of docs/extending.md) go to a temporary config folder on Hydra's search path, so
those examples compose as they would for a user who followed the page; the Python files of that
page are loaded and run on a tiny batch. docs/research-log.md is history, kept as written, and is
not checked.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from advlab.errors import DatasetFilesMissingError
from advlab.methods import build_method

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
NOT_CHECKED = {"research-log.md"}
DOCS_PAGES = sorted(p for p in (REPO_ROOT / "docs").glob("*.md") if p.name not in NOT_CHECKED)
PAGES = [REPO_ROOT / "README.md", *DOCS_PAGES]
FENCE = re.compile(r"^```[\w-]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`((?:python (?:train|eval)\.py|make train ARGS=)[^`]*)`")
COMMAND = re.compile(r"(?:^|\s)python (train|eval)\.py(?=\s|$)(.*)")
MAKE_TRAIN = re.compile(r'make train ARGS="([^"]*)"')
PLACEHOLDER = re.compile(r"<[^<>]*>")
TRAILING_COMMENT = re.compile(r"\s+#\s.*$")
#: a placeholder that stands for whole arguments, e.g. `<same overrides>`
ARGUMENTS_PLACEHOLDER = re.compile(r"(?:^|(?<=\s))<[^<>]*>(?=\s|$)")
#: Hydra reads `# @package` only from a file's first lines, so the path may come second
PATH_HEADER = re.compile(r"^(?:# @package \S+\n)?# ((?:configs|src)/\S+\.(?:yaml|py))\n")


def fenced_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def commands_in(text: str) -> Iterator[tuple[str, str]]:
    """(entry point, argument string) of every train.py / eval.py command in a page."""
    for block in fenced_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            yield from _commands_on(line)
    for span in INLINE.findall(FENCE.sub("", text)):
        yield from _commands_on(span)


def _commands_on(line: str) -> Iterator[tuple[str, str]]:
    line = TRAILING_COMMENT.sub("", line)
    if match := COMMAND.search(line):
        yield match.group(1), match.group(2).strip()
    elif match := MAKE_TRAIN.search(line):
        yield "train", match.group(1).strip()


def overrides_of(arguments: str) -> list[str]:
    """Hydra overrides of a command as written: placeholders filled in, a sweep's first value."""
    filled = PLACEHOLDER.sub("x", ARGUMENTS_PLACEHOLDER.sub("", arguments))
    kept: list[str] = []
    skip_next = False
    for token in shlex.split(filled, comments=True):
        if skip_next or token in ("-m", "--multirun", "..."):
            skip_next = False
            continue
        if token in ("--cfg", "-c", "--package", "-p"):
            skip_next = True
            continue
        kept.append(token)
    parsed = OverridesParser.create().parse_overrides(kept)
    return [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
        if o.is_sweep_override()
        else o.input_line
        for o in parsed
    ]


def example_files(suffix: str) -> dict[str, str]:
    """{path: text} of the code blocks headed by a path the repository does not have."""
    files: dict[str, str] = {}
    for page in PAGES:
        for block in fenced_blocks(page.read_text()):
            header = PATH_HEADER.match(block)
            path = header.group(1) if header else ""
            if path.endswith(suffix) and not (REPO_ROOT / path).exists():
                files[path] = block
    return files


def documented_commands() -> list[tuple[str, str, str]]:
    """(pages, entry point, arguments) of every distinct command, with the pages quoting it."""
    pages: dict[tuple[str, str], list[str]] = {}
    for page in PAGES:
        for command in commands_in(page.read_text()):
            quoted_in = pages.setdefault(command, [])
            if page.name not in quoted_in:
                quoted_in.append(page.name)
    return [(",".join(names), *command) for command, names in sorted(pages.items())]


DOCUMENTED = documented_commands()


@pytest.fixture(scope="module")
def example_configs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs_configs")
    for path, text in example_files(".yaml").items():
        target = root / Path(path).relative_to("configs")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


@pytest.fixture(scope="module")
def hydra_configs() -> Iterator[None]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def compose_command(entry: str, overrides: list[str], search: Path) -> DictConfig:
    return compose(entry, overrides=[*overrides, f"hydra.searchpath=[file://{search}]"])


def test_the_docs_quote_commands_of_every_page_kind() -> None:
    pages = {page for quoted_in, _, _ in DOCUMENTED for page in quoted_in.split(",")}
    assert {"README.md", "training.md", "evaluation.md", "extending.md", "results.md"} <= pages
    assert ("train", "experiment=mnist_pgd_at method=trades") in {c[1:] for c in DOCUMENTED}
    assert len(DOCUMENTED) >= 60, len(DOCUMENTED)


@pytest.mark.parametrize(("pages", "entry", "arguments"), DOCUMENTED)
def test_every_documented_command_composes(
    hydra_configs: None, example_configs: Path, pages: str, entry: str, arguments: str
) -> None:
    cfg = compose_command(entry, overrides_of(arguments), example_configs)
    # the parts a run builds first must resolve too (interpolations into renamed keys fail here)
    for key in ("data", "model", "attack", "suite"):
        if cfg.get(key) is not None:
            OmegaConf.to_container(cfg[key], resolve=True)


def test_a_stale_command_fails_this_test(hydra_configs: None, example_configs: Path) -> None:
    with pytest.raises(Exception, match="fast_at"):
        compose_command("train", overrides_of("experiment=mnist_fast_at"), example_configs)
    with pytest.raises(Exception, match="betta"):
        compose_command(
            "train", overrides_of("method=trades model.method.betta=3"), example_configs
        )


# ---- the worked examples of docs/extending.md run as written -------------------------------------
def _load(path: str, text: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    name = path.removeprefix("src/").removesuffix(".py").replace("/", ".")
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    exec(compile(text, path, "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, name, module)
    return module


@pytest.fixture
def example_modules(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    files = example_files(".py")
    assert set(files) >= {
        "src/advlab/nets/tiny_mlp.py", "src/advlab/data/kmnist.py", "src/advlab/methods/mixed.py"
    }  # fmt: skip
    return {path: _load(path, text, monkeypatch) for path, text in files.items()}


def test_the_worked_examples_build_and_train(
    hydra_configs: None,
    example_configs: Path,
    example_modules: dict[str, ModuleType],
    tmp_path: Path,
) -> None:
    cfg = compose_command(
        "train",
        ["data=kmnist", "model/net=tiny_mlp", "method=mixed", f"data.data_dir={tmp_path}"],
        example_configs,
    )
    # the dataset names its files when they are missing
    datamodule = hydra.utils.instantiate(cfg.data, download=False)
    with pytest.raises(DatasetFilesMissingError, match="KMNIST/raw/train-images-idx3-ubyte"):
        datamodule.prepare_data()
    # the network and the method train: a few steps lower the loss under the method's attack
    torch.manual_seed(0)
    net = hydra.utils.instantiate(cfg.model.net)
    method = build_method(cfg.model.method)
    assert type(method).__name__ == "MixedAT" and method.clean_weight == 0.5
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    losses = []
    for _ in range(6):
        loss, logits = method.loss(net, method.attack(net), x, y)
        assert logits.shape == (32, 10)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


def test_every_shipped_recipe_has_a_row_in_the_readme_and_the_results_page() -> None:
    """A new experiment config without its command, time and numbers (or "not yet measured")."""
    readme = (REPO_ROOT / "README.md").read_text()
    results = (REPO_ROOT / "docs" / "results.md").read_text()
    recipes = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
    assert len(recipes) >= 10
    missing = [
        name
        for name in recipes
        if f"python train.py experiment={name}" not in readme
        or not re.search(rf"\b{name}\b", results)
    ]
    assert not missing, f"recipes without a README row or a results entry: {missing}"
