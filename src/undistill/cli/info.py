"""Commands listing what this package knows: ``models``, ``datasets``, ``methods``."""

from typing import Annotated

import typer
from rich.table import Table

from undistill import api
from undistill.cli.options import Width, out


def models(
    classes: Annotated[int, typer.Option(help="number of classes")] = 10,
    width: Width = 1.0,
    channels: Annotated[int, typer.Option(help="input channels")] = 3,
    size: Annotated[int, typer.Option(help="input image size")] = 32,
) -> None:
    """List the architectures with their parameter counts."""
    rows = api.models(classes, width, channels, size)
    table = Table(title=f"{classes} classes, width {width}, {channels}x{size}x{size} input")
    table.add_column("architecture")
    table.add_column("parameters", justify="right")
    for name, n in rows:
        table.add_row(name, f"{n:,}")
    out.print(table)


def datasets() -> None:
    """List the dataset names."""
    for name in api.datasets():
        out.print(name)


def methods() -> None:
    """List the training methods with their traits."""
    table = Table()
    for col in ("method", "teachers", "labels", "description"):
        table.add_column(col)
    for m in api.methods():
        lo, hi = m["min_teachers"], m["max_teachers"]
        teachers = str(lo) if hi == lo else f"{lo}-{'any' if hi is None else hi}"
        table.add_row(m["name"], teachers, "needed" if m["needs_labels"] else "optional",
                      m["description"])
    out.print(table)
