"""pseudolabel.cli_options: options generated from dataclass fields by type (string annotations included), flag
names from field metadata, booleans as --x/--no-x, defaults in the help, choices read from a registry when a parser
is built, and the shared dict round trip."""
from __future__ import annotations  # every annotation below is a string, as in the project's config modules

import argparse
from dataclasses import dataclass, field
from typing import Optional

import pytest

from pseudolabel.cli_options import (DictConfig, add_dataclass_options, assignments_to_argv, config_from_options,
                                    given_options, options_argv)


@dataclass
class Example(DictConfig):
    threshold: float | None = field(default=None, metadata={"help": "a threshold"})
    count: Optional[int] = field(default=3, metadata={"help": "how many"})
    name: str = field(default="a", metadata={"help": "which", "choices": ("a", "b")})
    enabled: bool = field(default=True, metadata={"help": "switch", "flag": "feature"})
    share: float = field(default=0.5, metadata={"help": "a share", "min": 0.0, "max": 1.0})


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_dataclass_options(parser, Example, "example")
    return parser.parse_args(argv)


def test_optional_types_parse_to_their_member_type():
    config = config_from_options(parse("--threshold", "0.25", "--count", "7"), Example)
    assert config.threshold == 0.25 and isinstance(config.threshold, float)
    assert config.count == 7 and isinstance(config.count, int)


def test_defaults_apply_where_nothing_was_given():
    assert given_options(parse(), Example) == {}
    assert config_from_options(parse(), Example) == Example()
    assert given_options(parse("--name", "b"), Example) == {"name": "b"}


def test_flag_name_from_metadata_and_boolean_pairs():
    assert config_from_options(parse("--no-feature"), Example).enabled is False
    assert config_from_options(parse("--feature"), Example).enabled is True
    with pytest.raises(SystemExit):
        parse("--enabled")
    with pytest.raises(SystemExit):
        parse("--name", "c")  # not among the choices


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        parse("--help")
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--threshold THRESHOLD a threshold (default: None)", "--count COUNT how many (default: 3)",
                     "--feature, --no-feature switch (default: True)", "(default: a)"):
        assert expected in text


def test_a_type_without_a_command_line_form_is_refused():
    @dataclass
    class Bad:
        sizes: tuple[int, int] = (1, 2)

    with pytest.raises(TypeError, match="Bad.sizes"):
        add_dataclass_options(argparse.ArgumentParser(), Bad)


def test_dict_round_trip_and_unknown_keys():
    config = Example(threshold=0.5, name="b")
    assert Example.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown Example fields: \['colour'\]"):
        Example.from_dict({"colour": "red"})


def test_choices_given_as_a_function_are_read_when_each_parser_is_built():
    registry = ["x"]

    @dataclass
    class Registered:
        kind: str = field(default="x", metadata={"help": "a registered name", "choices": lambda: registry})

    def parser() -> argparse.ArgumentParser:
        built = argparse.ArgumentParser()
        add_dataclass_options(built, Registered)
        return built

    before = parser()
    registry.append("y")
    assert config_from_options(parser().parse_args(["--kind", "y"]), Registered).kind == "y"
    with pytest.raises(SystemExit):
        before.parse_args(["--kind", "y"])  # its choices are those of the registry when it was built
    assert "{x,y}" in parser().format_help()


def test_prefixed_options_live_beside_options_of_the_same_name():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name")
    add_dataclass_options(parser, Example, "example", prefix="ex_")
    args = parser.parse_args(["--name", "free", "--ex-name", "b", "--no-ex-feature"])
    assert args.name == "free" and given_options(args, Example, "ex_") == {"name": "b", "enabled": False}
    assert config_from_options(args, Example, "ex_") == Example(name="b", enabled=False)


def test_assignments_become_the_same_options():
    argv = assignments_to_argv(["count=4", "feature=false", "enabled=yes", "name=b"], (Example,))
    assert argv == ["--count", "4", "--no-feature", "--feature", "--name", "b"]
    assert config_from_options(parse(*argv), Example) == Example(count=4, enabled=True, name="b")
    assert options_argv(Example(count=4, enabled=False), Example()) == ["--count", "4", "--no-feature"]
    with pytest.raises(ValueError, match="known: count, feature, name, share, threshold"):
        assignments_to_argv(["colour=red"], (Example,))
    with pytest.raises(ValueError, match="is a switch"):
        assignments_to_argv(["feature=maybe"], (Example,))


def test_bounds_from_the_metadata_refuse_bad_values_naming_the_option():
    with pytest.raises(ValueError, match=r"--share 1.5: must be in \[0.0, 1.0\]"):
        Example(share=1.5)
    with pytest.raises(ValueError, match="--share"):
        Example.from_dict({"share": -1})
    assert Example(share=1.0).share == 1.0


@pytest.mark.parametrize("value", ["0", "-1"])
def test_limit_zero_or_negative_is_refused_at_parse_time(value, capsys):
    """--limit 0 used to label the whole split and -1 to drop the last image; both are refused with exit 2."""
    from pseudolabel.generate import build_parser
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["--limit", value])
    assert stop.value.code == 2 and "--limit" in capsys.readouterr().err


def test_gen_pseudo_help_lists_the_papers_settings_apart_from_the_open_choices():
    """``--help`` groups the method's options: the paper's settings, the models, the reconstructed open choices."""
    from pseudolabel.generate import build_parser

    groups = {group.title: {option for action in group._group_actions for option in action.option_strings}
              for group in build_parser()._action_groups}
    paper = next(options for title, options in groups.items() if title.startswith("the paper's settings"))
    models = groups["models, weights and seeds"]
    open_choices = next(options for title, options in groups.items() if title.startswith("reconstructed open choices"))
    assert {"--num-skips", "--tau", "--prompt-set", "--sam-model", "--grid-size", "--delta", "--refine"} <= paper
    assert {"--clip-model", "--clip-weights", "--sam-checkpoint", "--clip-seed", "--sam-seed"} <= models
    assert {"--skip-entry", "--skip-fusion", "--attn-blocks", "--par", "--filter-metric", "--merge"} <= open_choices
    assert not paper & open_choices and not models & (paper | open_choices)
    titles = [title for title in groups if title]
    assert titles.index("run") < next(i for i, t in enumerate(titles) if t.startswith("reconstructed"))
