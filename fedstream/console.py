"""Where the CLI writes: colour and live progress on a terminal, plain stable text elsewhere.

A terminal gets rich's colours (unless `NO_COLOR` is set) and live bars. Anything else (a pipe,
a file, a test's StringIO) gets no colour and no animation whatever `FORCE_COLOR` or
`TTY_COMPATIBLE` say, a fixed width instead of `COLUMNS`, and lines without trailing blanks,
so scripts and tests can compare the text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, TextIO

from rich.console import Console, RenderableType
from rich.text import Text

# Off a terminal a row never wraps: one record, one line, for grep and awk. A table is only as
# wide as its cells, so this pads nothing.
PLAIN_WIDTH = 1000


def is_terminal(out: TextIO) -> bool:
    """Whether `out` is a terminal (a closed or fake stream is not)."""
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def console_for(out: TextIO) -> Console:
    """A console on `out`: a terminal's, or a plain one of fixed width."""
    if is_terminal(out):
        # rich reads NO_COLOR and TERM=dumb itself.
        return Console(file=out, force_terminal=True, highlight=False, emoji=False)
    return Console(file=out, force_terminal=False, force_interactive=False, color_system=None,
                   no_color=True, width=PLAIN_WIDTH, height=50, highlight=False, emoji=False,
                   legacy_windows=False)


def emit(console: Console, *renderables: RenderableType) -> None:
    """Print renderables; on a plain console without the blanks rich pads lines with."""
    if console.is_terminal:
        console.print(*renderables)
        return
    with console.capture() as captured:
        console.print(*renderables)
    lines = [line.rstrip() for line in captured.get().splitlines()]
    console.file.write("".join(f"{line}\n" for line in lines))
    console.file.flush()


def say(console: Console, text: str, style: str = "") -> None:
    """One line, never wrapped nor read as markup (ids and reasons may hold brackets)."""
    console.print(Text(text, style=style), soft_wrap=True)


def print_json(doc: Mapping[str, Any], out: TextIO) -> None:
    """One JSON document, keys in the order built, never coloured; a NaN or infinite score
    is null (strict JSON has neither)."""
    out.write(json.dumps(_finite(doc), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    out.flush()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
