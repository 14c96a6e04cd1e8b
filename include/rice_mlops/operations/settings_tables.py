"""The settings tables of docs/configuration.md, generated from `settings_catalog`:

    python -m rice_mlops.operations.settings_tables                    # print the tables
    python -m rice_mlops.operations.settings_tables --write docs/configuration.md
    python -m rice_mlops.operations.settings_tables --check docs/configuration.md  # exit 1 if stale

`scripts/settings-table [--check]` runs the last two on the checkout. Standard library only, so
it runs under whatever python3 there is.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rice_mlops.core.settings import PipelineSettings
from rice_mlops.ingress.settings import WebhookSettings
from rice_mlops.operations.settings_catalog import (
    SETTINGS,
    TOOL_SETTINGS,
    WEBHOOK_SETTINGS,
    Setting,
)
from rice_mlops.operations.tool_settings import ToolSettings

START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"


@dataclass(frozen=True)
class Catalogue:
    """One settings class, its variables, and the table generated from them."""

    name: str  # the table's markers: <!-- {name}:start --> ... <!-- {name}:end -->
    of: type
    entries: tuple[Setting, ...]

    @property
    def start(self) -> str:
        return f"<!-- {self.name}:start -->"

    @property
    def end(self) -> str:
        return f"<!-- {self.name}:end -->"


CATALOGUES: tuple[Catalogue, ...] = (
    Catalogue("settings-table", PipelineSettings, SETTINGS),
    Catalogue("webhook-settings-table", WebhookSettings, WEBHOOK_SETTINGS),
    Catalogue("tool-settings-table", ToolSettings, TOOL_SETTINGS),
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(settings: Sequence[Setting] = SETTINGS) -> str:
    """A settings table, one row per variable, in catalogue order."""
    rows = ["| variable | default | accepts | meaning |", "|---|---|---|---|"]
    rows += [f"| `{s.env}` | {_cell(s.shown_default)} | {_cell(s.kind)} | {_cell(s.meaning)} |"
             for s in settings]
    return "\n".join(rows) + "\n"


def with_table(readme: str, table: str | None = None, start_marker: str = START,
               end_marker: str = END) -> str:
    """`readme` with the text between the markers replaced by the table; ValueError when the
    markers are missing or out of order."""
    table = markdown_table() if table is None else table
    start, end = readme.find(start_marker), readme.find(end_marker)
    if (start < 0 or end < start or readme.count(start_marker) != 1
            or readme.count(end_marker) != 1):
        raise ValueError(f"expected one {start_marker} line and, after it, one {end_marker} "
                         "line")
    head = readme[:start + len(start_marker)]
    return f"{head}\n{table}{readme[end:]}"


def with_tables(readme: str) -> str:
    """`readme` with every catalogue's table regenerated between its markers."""
    for catalogue in CATALOGUES:
        readme = with_table(readme, markdown_table(catalogue.entries), catalogue.start,
                            catalogue.end)
    return readme


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rice_mlops.operations.settings_tables",
                                     description="The settings tables of docs/configuration.md.")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", metavar="FILE", type=Path,
                        help="rewrite the tables between the markers in FILE")
    action.add_argument("--check", metavar="FILE", type=Path,
                        help="exit 1 when a table in FILE differs from the catalogue")
    args = parser.parse_args(argv)
    if not (path := args.write or args.check):
        for catalogue in CATALOGUES:
            sys.stdout.write(f"{catalogue.start}\n{markdown_table(catalogue.entries)}\n")
        return 0
    readme = path.read_text(encoding="utf-8")
    try:
        wanted = with_tables(readme)
    except ValueError as exc:
        print(f"settings-table: {path}: {exc}", file=sys.stderr)
        return 1
    if args.check:
        if wanted != readme:
            print(f"settings-table: {path}: a settings table differs from "
                  "rice_mlops.operations.settings_catalog; "
                  "run scripts/settings-table to regenerate it",
                  file=sys.stderr)
            return 1
        return 0
    if wanted != readme:
        path.write_text(wanted, encoding="utf-8")
        print(f"settings-table: {path}: table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
