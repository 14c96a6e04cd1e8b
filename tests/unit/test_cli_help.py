"""`rice-mlops --help` whatever the environment holds, and help on every option."""

from __future__ import annotations

import argparse

import pytest

from rice_mlops.operations.cli import build_parser, main

MALFORMED = {"RICE_MIN_TEST_ACCURACY": "abc", "RICE_EPOCHS": "many",
             "RICE_ROLLOUT_PORT": "-1", "RICE_SIGNING_KEY_FILE": ""}


def _parsers(parser: argparse.ArgumentParser, path=()):
    """Every parser of the command tree, with the words that reach it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


COMMANDS = [path for path, _ in _parsers(build_parser())]


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "rice-mlops")
def test_help_works_whatever_the_settings_hold(monkeypatch, capsys, words):
    for name, value in MALFORMED.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as done:
        main([*words, "--help"])
    assert done.value.code == 0
    assert "usage: rice-mlops" in capsys.readouterr().out


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "rice-mlops")
def test_every_option_says_what_it_is(words):
    parser = dict(_parsers(build_parser()))[words]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        assert action.help and action.help != argparse.SUPPRESS, (words, action.dest)
    text = parser.format_help()
    for action in parser._actions:
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            assert f"(default: {action.default})" in " ".join(text.split()), (words, action.dest)


def test_a_malformed_setting_is_named_when_the_command_runs(monkeypatch, capsys):
    monkeypatch.setenv("RICE_MIN_TEST_ACCURACY", "abc")
    assert main(["image", "build", "--model-uri", "models:/rice-classifier/1",
                 "--tag", "rice:dev"]) == 2
    assert "RICE_MIN_TEST_ACCURACY='abc'" in capsys.readouterr().err


def test_an_option_given_wins_over_the_setting(monkeypatch):
    """What `image build` passes on: the option when given, else the setting, else nothing."""
    from rice_mlops.operations import cli_commands


    def stop(model_uri):
        raise ValueError("stop here")

    monkeypatch.setattr("rice_mlops.core.model_registry.resolve", stop)
    monkeypatch.setenv("RICE_MIN_TEST_ACCURACY", "0")  # zero is a value, not "unset"
    args = build_parser().parse_args(["image", "build", "--model-uri", "m", "--tag", "a:b",
                                      "--min-class-recall", "0.8"])
    with pytest.raises(ValueError, match="stop here"):
        cli_commands.cmd_image_build(args)
    seen = {k: getattr(args, k) for k in ("min_test_accuracy", "min_class_recall",
                                          "base_image", "wheelhouse")}
    assert seen == {"min_test_accuracy": 0.0, "min_class_recall": 0.8, "base_image": None,
                    "wheelhouse": None}
