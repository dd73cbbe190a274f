"""Dataclass configs as command-line options and as JSON dicts: the one generator every tool uses, so a tool's
``--help`` and its Python config cannot drift apart; the dict round trip and comparison of configs. Standard
library only (the storage layer and the evaluator import it).

A config field becomes ``--field-name VALUE`` (``--flag-name`` when its metadata declares ``"flag"``); a boolean
becomes ``--name`` / ``--no-name``. Field metadata: ``"help"`` (the text; the default is appended), optional
``"choices"`` (a sequence, or a function returning one, called when a parser is built: the names of a registry that
can grow, such as the SAM variants), ``"flag"``, ``"default_text"`` (the default as the help states it, for one that
depends on the dataset, say) and the inclusive bounds ``"min"`` / ``"max"`` (checked by :class:`DictConfig` whenever
a config is built, so a bad value fails before any work, whichever tool gave it). Field types: ``bool``, ``int``,
``float``, ``str``, or one of them ``| None``. A field's ``"group"`` metadata names the ``--help`` group it is
listed in when a tool groups a config's options by it (:func:`add_dataclass_options`'s ``groups``). A tool that
needs one config's options twice, or next to options of the same name, gives them a ``prefix`` (``--eval-seed``). :func:`assignments_to_argv` turns ``field=value`` pairs into
the same options, so both spellings are parsed, and refused, by the same parser.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path

SCALAR_TYPES = (bool, int, float, str)


def program_name(script: str) -> str:
    """The program name for usage lines: the installed command (``cep-...``) when run as one, else ``script`` (e.g.
    the ``tools/`` wrapper of a module run with ``python -m``)."""
    invoked = Path(sys.argv[0]).name
    return invoked if invoked.startswith("cep-") else script


def option_name(field: dataclasses.Field, prefix: str = "") -> str:
    """The option of a field: ``--`` + ``prefix`` + its ``flag`` metadata or its name, with '-' for '_'."""
    return "--" + (prefix + field.metadata.get("flag", field.name)).replace("_", "-")


def _dest(field: dataclasses.Field, prefix: str) -> str:
    return (prefix + field.name).replace("-", "_")


def value_type(cls: type, field: dataclasses.Field) -> type:
    """The scalar type a field's option parses to; ``X | None`` and ``Optional[X]`` give ``X``."""
    hint = typing.get_type_hints(cls)[field.name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        hint = members[0] if len(members) == 1 else hint
    if hint not in SCALAR_TYPES:
        raise TypeError(f"{cls.__name__}.{field.name}: type {hint} has no command-line form "
                        f"(use one of {[t.__name__ for t in SCALAR_TYPES]}, optionally | None)")
    return hint


def field_choices(field: dataclasses.Field) -> tuple | None:
    """The values a field's option accepts (its ``"choices"`` metadata, a function called now), or None for any."""
    choices = field.metadata.get("choices")
    if callable(choices):
        choices = choices()
    return None if choices is None else tuple(choices)


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, title: str | None = None, prefix: str = "",
                          groups: dict | None = None):
    """Add one option per field of the dataclass ``cls`` (in a group titled ``title`` when given; named with
    ``prefix``) and return the group. ``groups``: argument groups by the fields' ``"group"`` metadata (key None: a
    field without it), instead of one group. Options default to None, so :func:`given_options` tells what was given;
    help shows the field's default."""
    group = parser.add_argument_group(title) if title else parser
    for field in dataclasses.fields(cls):
        kind = value_type(cls, field)
        help_text = field.metadata.get("help", "")
        if "default_text" in field.metadata:
            help_text += f" (default: {field.metadata['default_text']})"
        elif field.default is not dataclasses.MISSING:
            help_text += f" (default: {field.default})"
        elif field.default_factory is not dataclasses.MISSING:
            help_text += f" (default: {field.default_factory()})"
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        options = {"dest": _dest(field, prefix), "default": None, "required": required, "help": help_text}
        target = groups[field.metadata.get("group")] if groups is not None else group
        if kind is bool:
            target.add_argument(option_name(field, prefix), action=argparse.BooleanOptionalAction, **options)
        else:
            target.add_argument(option_name(field, prefix), type=kind, choices=field_choices(field), **options)
    return group


def given_options(args: argparse.Namespace, cls: type, prefix: str = "") -> dict:
    """``field name -> value`` of the options of ``cls`` given on the command line."""
    values = {f.name: getattr(args, _dest(f, prefix)) for f in dataclasses.fields(cls)}
    return {name: value for name, value in values.items() if value is not None}


def config_from_options(args: argparse.Namespace, cls: type, prefix: str = "",
                        parser: argparse.ArgumentParser | None = None):
    """An instance of ``cls``: the given options over the dataclass defaults. With ``parser``, a value outside a
    field's bounds is that parser's error (one line naming the option and the range, exit status 2)."""
    given = given_options(args, cls, prefix)
    try:
        for field in dataclasses.fields(cls):
            check_bounds(field, given.get(field.name), prefix)
        return cls(**given)
    except ValueError as error:
        if parser is None:
            raise
        parser.error(str(error))


def options_argv(config, base) -> list[str]:
    """The options that turn the dataclass config ``base`` into ``config`` (same class): ``--num-skips 0 --no-refine``."""
    argv = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value != getattr(base, field.name):
            flag = option_name(field)
            argv += ([flag] if value else ["--no-" + flag[2:]]) if isinstance(value, bool) else [flag, str(value)]
    return argv


TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def assignments_to_argv(assignments: list[str], classes: tuple[type, ...]) -> list[str]:
    """``field=value`` pairs (a field's name or its flag name, ``-`` or ``_``) as the options of ``classes``:
    ``num_skips=0 refine=false`` -> ``--num-skips 0 --no-refine``. An unknown name or a boolean that is not
    true/false is a ``ValueError``; values are left to the parser, which checks them as it checks the options."""
    by_name = {}
    for cls in classes:
        for field in dataclasses.fields(cls):
            by_name[field.name] = by_name[option_name(field)[2:].replace("-", "_")] = (cls, field)
    argv = []
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        key = name.strip().replace("-", "_")
        if not equals or key not in by_name:
            known = ", ".join(sorted({option_name(f)[2:].replace("-", "_") for _, f in by_name.values()}))
            raise ValueError(f"'{assignment}' is not field=value with a known field (known: {known})")
        cls, field = by_name[key]
        if value_type(cls, field) is bool:
            if value.strip().lower() not in TRUE + FALSE:
                raise ValueError(f"'{assignment}': {option_name(field)} is a switch, give true or false")
            flag = option_name(field)
            argv.append(flag if value.strip().lower() in TRUE else "--no-" + flag[2:])
        else:
            argv += [option_name(field), value.strip()]
    return argv


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``dotted.name: old -> new`` of every field whose value differs between two (nested) config dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


class DictConfig:
    """``to_dict`` / ``from_dict`` for a flat dataclass config (a mixin); an unknown key is an error naming it. Values
    outside a field's ``"min"`` / ``"max"`` metadata are refused when the config is built, naming the option."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check_bounds(field, getattr(self, field.name))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**data)


def within(value: float, low: float | None, high: float | None) -> bool:
    """Whether ``value`` lies in the inclusive bounds (None: unbounded on that side)."""
    return (low is None or value >= low) and (high is None or value <= high)


def bounds_text(low: float | None, high: float | None) -> str:
    """The bounds as an error states them: ``>= 1``, ``<= 5``, ``in [0.0, 1.0]``."""
    return f">= {low}" if high is None else f"<= {high}" if low is None else f"in [{low}, {high}]"


def check_bounds(field: dataclasses.Field, value, prefix: str = "") -> None:
    """Refuse (``ValueError`` naming the option and the range) a value outside the field's ``"min"``/``"max"``."""
    low, high = field.metadata.get("min"), field.metadata.get("max")
    if value is not None and not within(value, low, high):
        raise ValueError(f"{option_name(field, prefix)} {value}: must be {bounds_text(low, high)}")


def bounded(kind: type, low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    """argparse type: a ``kind`` (int or float) in the inclusive bounds, refused at parse time with the range
    (``argument --limit: must be an integer >= 1, got 0``)."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun} {bounds_text(low, high)}, got {text!r}") from None
        if not within(value, low, high):
            raise argparse.ArgumentTypeError(f"must be {noun} {bounds_text(low, high)}, got {value}")
        return value

    parse.__name__ = kind.__name__   # argparse names the type in its 'invalid value' message
    return parse


positive_int = bounded(int, low=1)
non_negative_int = bounded(int, low=0)
