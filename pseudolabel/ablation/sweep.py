"""Sweeps: stage-one settings grouped into tables, each setting (a row) an ordinary stage-one configuration. A sweep
file (the shipped ones: ``pseudolabel/ablation/sweeps/``) and how a row's options add to the sweep's:
docs/ablations.md#sweeps. A row goes through gen_pseudo's own parser (:func:`pseudolabel.generate.add_method_options`)
and the config classes' checks, so it is refused exactly where gen_pseudo would refuse the same options.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import zlib
from dataclasses import dataclass
from pathlib import Path

from pseudolabel.cli_options import assignments_to_argv, config_differences, options_argv
from pseudolabel.config import MethodOptions, PseudoLabelConfig
from pseudolabel.generate import METHOD_CONFIGS, add_method_options

SWEEP_DIR = Path(__file__).with_name("sweeps")
SWEEP_FORMAT = "cep-ablation-sweep"


class SweepError(ValueError):
    """A sweep file or row that cannot be used; the message names the file, the table and the row."""


class _RaisingParser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting (a bad row is one message, not a usage dump)."""

    def error(self, message: str):
        raise SweepError(message)


@dataclass
class Row:
    """One stage-one configuration of a sweep; ``slug`` names its output folder ``rows/<slug>``."""

    slug: str
    config: PseudoLabelConfig
    flags: list[str]                    # the row's options over the sweep's, as gen_pseudo options


@dataclass
class TableRow:
    """A row as a table shows it: its label and the sweep row it is."""

    label: str
    row: Row


@dataclass
class Table:
    """A sweep's table: its rows in order and the row they are compared with."""

    name: str
    title: str
    rows: list[TableRow]
    baseline: Row
    note: str = ""


@dataclass
class Sweep:
    """The tables of a sweep and its distinct rows, in first-appearance order."""

    name: str
    description: str
    tables: list[Table]
    rows: list[Row]

    def identity(self) -> dict:
        """What a rerun into the same folder must match (``sweep.json``): the tables and every row's configuration."""
        tables = [{"name": t.name, "title": t.title, "note": t.note, "baseline": t.baseline.slug,
                   "rows": [{"label": r.label, "row": r.row.slug} for r in t.rows]} for t in self.tables]
        return {"format": SWEEP_FORMAT, "tables": tables, "rows": {r.slug: r.config.to_dict() for r in self.rows}}

    def differences(self, stored: dict) -> list[str]:
        """What differs from an earlier sweep's identity (``sweep.json``; empty: the same sweep), one short phrase
        each: rows no longer in the sweep, new rows, rows whose configuration changed (the fields), tables changed."""
        mine = self.identity()
        if stored.get("format") != mine["format"]:
            return [f"format {stored.get('format')!r} -> {mine['format']!r}"]
        old, new = stored.get("rows", {}), mine["rows"]
        changes = []
        if gone := [slug for slug in old if slug not in new]:
            changes.append(f"rows no longer in the sweep: {', '.join(gone)}")
        if added := [slug for slug in new if slug not in old]:
            changes.append(f"new rows: {', '.join(added)}")
        changes += [f"row {slug}: {', '.join(config_differences(old[slug], new[slug]))}"
                    for slug in new if slug in old and old[slug] != new[slug]]
        old_tables = {t["name"]: t for t in stored.get("tables", [])}
        new_tables = {t["name"]: t for t in mine["tables"]}
        if list(old_tables) != list(new_tables):
            changes.append(f"tables {', '.join(old_tables) or 'none'} -> {', '.join(new_tables)}")
        changes += [f"table {name}: other {' and '.join(k for k in table if old_tables[name].get(k) != table[k])}"
                    for name, table in new_tables.items() if name in old_tables and old_tables[name] != table]
        return changes


def gen_pseudo_flags(config: PseudoLabelConfig, base: PseudoLabelConfig) -> list[str]:
    """The options that turn ``base`` into ``config`` (gen_pseudo's spelling)."""
    return (options_argv(config.cam, base.cam) + options_argv(config.refine, base.refine)
            + options_argv(config.labeller, base.labeller))


def slug_of(config: PseudoLabelConfig, base: PseudoLabelConfig) -> str:
    """A folder name from the options that turn ``base`` into ``config``: ``num-skips-0_no-refine``; ``defaults``
    when there are none."""
    pieces: list[str] = []
    for word in gen_pseudo_flags(config, base):
        if word.startswith("--"):
            pieces.append(word[2:])
        else:
            pieces[-1] += f"-{word}"
    slug = re.sub(r"[^A-Za-z0-9._+=-]+", "-", "_".join(pieces)) or "defaults"
    if len(slug) > 80:  # a long path or many options: keep it readable and unique
        slug = f"{slug[:70]}-{zlib.crc32(slug.encode()):08x}"
    return slug


class SweepBuilder:
    """Turns sweep files and ``--row`` strings into a :class:`Sweep` over the sweep's own method options
    (``method``, given to every row) for ``config_dataset`` and ``split``, in the precision the device uses
    (:func:`pseudolabel.precision.effective_precision`)."""

    def __init__(self, method: MethodOptions, config_dataset: str, split: str, precision: str = "fp32"):
        self.method, self.config_dataset, self.split, self.precision = method, config_dataset, split, precision
        self.base = method.config(config_dataset, split, precision)
        self.parser = _RaisingParser(add_help=False, allow_abbrev=False)
        add_method_options(self.parser)
        self.rows: dict[str, Row] = {}        # slug -> row
        self.tables: list[Table] = []

    def row(self, flags: str, where: str) -> Row:
        """The row of ``flags`` (an existing one when the configuration is the same): gen_pseudo's options when they
        start with ``--``, else ``field=value`` pairs (``num_skips=0 refine=false``)."""
        try:
            tokens = shlex.split(flags)
            argv = tokens if tokens and tokens[0].startswith("--") else assignments_to_argv(tokens, METHOD_CONFIGS)
            given = MethodOptions.from_args(self.parser.parse_args(argv))    # the row's options, over the sweep's
            method = MethodOptions({**self.method.cam, **given.cam}, {**self.method.refine, **given.refine},
                                   {**self.method.labeller, **given.labeller})
            config = method.config(self.config_dataset, self.split, self.precision)
        except ValueError as error:
            raise SweepError(f"{where}, row '{flags}': {error}") from None
        slug = slug_of(config, self.base)
        if slug in self.rows and self.rows[slug].config != config:
            slug = f"{slug}-{zlib.crc32(json.dumps(config.to_dict(), sort_keys=True).encode()):08x}"
        return self.rows.setdefault(slug, Row(slug, config, gen_pseudo_flags(config, self.base)))

    def add_table(self, spec: dict, where: str) -> None:
        """Add one table (``{"name", "title", "rows", "baseline"}``) of a sweep file or of ``--row`` options."""
        name = str(spec.get("name") or f"table{len(self.tables) + 1}")
        where = f"{where}, table '{name}'"
        if unknown := set(spec) - {"name", "title", "rows", "baseline", "note"}:
            raise SweepError(f"{where}: unknown keys {sorted(unknown)} (a table has name, title, note, rows, baseline)")
        if not isinstance(spec.get("rows"), list) or not spec["rows"]:
            raise SweepError(f"{where}: a table needs a non-empty 'rows' list")
        if name in {t.name for t in self.tables}:
            raise SweepError(f"{where}: two tables have this name")
        rows = []
        for item in spec["rows"]:
            flags, label = (item.get("flags", ""), item.get("label")) if isinstance(item, dict) else (item, None)
            if not isinstance(flags, str):
                raise SweepError(f"{where}: a row is a string of options or {{'label': ..., 'flags': ...}}")
            row = self.row(flags, where)
            if row in [r.row for r in rows]:
                raise SweepError(f"{where}: rows '{flags}' and '{[r.label for r in rows if r.row is row][0]}' are "
                                 "the same configuration")
            rows.append(TableRow(label or flags.strip() or "defaults", row))
        baseline = spec.get("baseline")
        by_label = [r.row for r in rows if r.label == baseline]
        base_row = rows[0].row if baseline is None else by_label[0] if by_label else self.row(str(baseline), where)
        if base_row not in [r.row for r in rows]:
            raise SweepError(f"{where}: the baseline '{baseline}' is not one of the table's rows")
        self.tables.append(Table(name, str(spec.get("title") or name), rows, base_row, str(spec.get("note", ""))))

    def add_file(self, path: Path) -> str:
        """Add every table of a sweep file; returns its description."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise SweepError(f"cannot read the sweep file '{path}': {error}") from None
        if not isinstance(data, dict) or not isinstance(data.get("tables"), list) or not data["tables"]:
            raise SweepError(f"{path}: a sweep file is a JSON object with a non-empty 'tables' list")
        for spec in data["tables"]:
            if not isinstance(spec, dict):
                raise SweepError(f"{path}: every table is an object with 'rows'")
            self.add_table(spec, str(path))
        return str(data.get("description", ""))

    def build(self, name: str, description: str = "") -> Sweep:
        """The sweep of every table added."""
        if not self.tables:
            raise SweepError("nothing to run: give --sweep NAME|FILE or --row OPTIONS")
        return Sweep(name, description, self.tables, list(self.rows.values()))


def sweep_file(name: str) -> Path:
    """A shipped sweep by name (``paper``, ``skips``, ...), or a file path."""
    shipped = SWEEP_DIR / f"{name}.json"
    path = shipped if shipped.is_file() else Path(name)
    if not path.is_file():
        raise SweepError(f"no sweep '{name}': give a file, or one of the shipped sweeps "
                         f"({', '.join(shipped_sweeps())})")
    return path


def shipped_sweeps() -> list[str]:
    """The names of the shipped sweeps."""
    return sorted(p.stem for p in SWEEP_DIR.glob("*.json"))
