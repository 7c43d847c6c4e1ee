"""Checks of what a data config declares (shape, classes, statistics) against the dataset.

Networks and attacks are sized from the config's declarations before any file is read, so a
declaration that disagrees with the dataset must fail at once, in one line.
"""

from __future__ import annotations

from collections.abc import Sequence

from advlab.errors import ConfigError


def check_declarations(
    name: str,
    dims: tuple[int, int, int],
    num_classes: int,
    declared_shape: Sequence[int] | None,
    declared_classes: int | None,
    stats: dict[str, Sequence[float] | None],
) -> None:
    """Raise ConfigError where `data.image_shape`, `data.num_classes` or `data.mean`/`data.std`
    disagree with the dataset `name` of shape `dims` and `num_classes` classes."""
    if declared_shape is not None and tuple(declared_shape) != tuple(dims):
        raise ConfigError(
            f"data.image_shape={list(declared_shape)} but {name} images are {list(dims)} "
            "(channels, height, width)"
        )
    if declared_classes is not None and declared_classes != num_classes:
        raise ConfigError(
            f"data.num_classes={declared_classes} but {name} has {num_classes} classes"
        )
    for key, values in stats.items():
        if values is not None and len(values) != dims[0]:
            raise ConfigError(f"data.{key} has {len(values)} values for {dims[0]}-channel images")
