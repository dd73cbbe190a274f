"""Dataclass configs as command-line options and as JSON dicts: the one generator every tool uses, so a tool's
``--help`` and its Python config cannot drift apart; the dict round trip and comparison of configs. Standard
library only (the storage layer and the evaluator import it).

A config field becomes ``--field-name VALUE`` (``--flag-name`` when its metadata declares ``"flag"``); a boolean
becomes ``--name`` / ``--no-name``. Field metadata: ``"help"`` (the text; the default is appended), optional
``"choices"``, ``"flag"`` and ``"default_text"`` (the default as the help states it, for one that depends on the
dataset, say). Field types: ``bool``, ``int``, ``float``, ``str``, or one of them ``| None``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path

SCALAR_TYPES = (bool, int, float, str)


def program_name(script: str) -> str:
    """The program name for usage lines: the installed command (``cep-...``) when run as one, else ``script`` (e.g.
    the ``tools/`` wrapper of a module run with ``python -m``)."""
    invoked = Path(sys.argv[0]).name
    return invoked if invoked.startswith("cep-") else script


def option_name(field: dataclasses.Field) -> str:
    """The option of a field: ``--`` + its ``flag`` metadata or its name, with '-' for '_'."""
    return "--" + field.metadata.get("flag", field.name).replace("_", "-")


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


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, title: str | None = None):
    """Add one option per field of the dataclass ``cls`` (in a group titled ``title`` when given) and return the
    group. Options default to None, so :func:`given_options` tells what was given; help shows the field's default."""
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
        options = {"dest": field.name, "default": None, "required": required, "help": help_text}
        if kind is bool:
            group.add_argument(option_name(field), action=argparse.BooleanOptionalAction, **options)
        else:
            group.add_argument(option_name(field), type=kind, choices=field.metadata.get("choices"), **options)
    return group


def given_options(args: argparse.Namespace, cls: type) -> dict:
    """``field name -> value`` of the options of ``cls`` given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name) is not None}


def config_from_options(args: argparse.Namespace, cls: type):
    """An instance of ``cls``: the given options over the dataclass defaults."""
    return cls(**given_options(args, cls))


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
    """``to_dict`` / ``from_dict`` for a flat dataclass config (a mixin); an unknown key is an error naming it."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**data)
