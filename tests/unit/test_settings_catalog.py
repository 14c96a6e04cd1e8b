"""The settings catalogue tells the truth about `PipelineSettings.from_env`, and the README's
pipeline settings table is the one generated from it."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path

import pytest

from rice_mlops import settings_catalog
from rice_mlops.settings import PipelineSettings, SettingsError
from rice_mlops.settings_catalog import END, SETTINGS, START, main, markdown_table, shown

README = Path(__file__).resolve().parents[2] / "README.md"
BY_ENV = {s.env: s for s in SETTINGS}
# Variables from_env reads that are not RICE_*: fallbacks of a catalogued variable, each named
# in that variable's default.
FALLBACKS = {"DOCKER_HOST": "RICE_DOCKER_SOCKET", "AIRFLOW__API__BASE_URL": "RICE_AIRFLOW_URL"}


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers every name asked of it."""

    def __init__(self, values: dict[str, str] | None = None):
        self.values = values or {}
        self.asked: list[str] = []

    def __getitem__(self, name: str) -> str:
        self.asked.append(name)
        return self.values[name]

    def get(self, name, default=None):
        self.asked.append(name)
        return self.values.get(name, default)

    def __contains__(self, name) -> bool:
        self.asked.append(name)
        return name in self.values

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("from_env should ask for its variables by name, not list them all")

    def __len__(self) -> int:
        return len(self.values)


def test_the_readme_table_is_the_generated_one():
    readme = README.read_text(encoding="utf-8")
    start, end = readme.index(START), readme.index(END)
    assert readme[start + len(START):end].strip() == markdown_table().strip(), \
        "README.md's settings table is stale: run scripts/settings-table"
    assert main(["--check", str(README)]) == 0


def test_check_mode_fails_on_a_stale_table_and_write_mode_fixes_it(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{START}\n| `RICE_EPOCHS` | 3 | | |\n{END}\n\nafter\n")
    assert main(["--check", str(readme)]) == 1
    assert "run scripts/settings-table" in capsys.readouterr().err
    assert main(["--write", str(readme)]) == 0
    assert readme.read_text() == f"# x\n\n{START}\n{markdown_table()}{END}\n\nafter\n"
    assert main(["--check", str(readme)]) == 0


def test_check_mode_fails_without_the_markers(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{END}\n{START}\n")
    assert main(["--check", str(readme)]) == 1
    assert START in capsys.readouterr().err


def test_a_pipe_in_a_meaning_does_not_split_the_row():
    entry = settings_catalog.Setting(env="RICE_X", field="epochs", kind="a | b", meaning="c|d",
                                     default_text="e")
    row = markdown_table([entry]).splitlines()[-1]
    assert row == "| `RICE_X` | e | a \\| b | c\\|d |"


def test_every_field_has_exactly_one_entry_and_every_entry_a_field():
    counts = Counter(s.field for s in SETTINGS)
    names = {f.name for f in fields(PipelineSettings)}
    assert {field for field, n in counts.items() if n > 1} == set()
    assert names - set(counts) == set(), "fields without a catalogue entry"
    assert set(counts) - names == set(), "entries naming no field"
    assert len(BY_ENV) == len(SETTINGS), "a variable is catalogued twice"


def test_every_variable_from_env_reads_is_catalogued_and_every_catalogued_one_is_read():
    env = RecordingEnv()
    PipelineSettings.from_env(env)
    asked = set(env.asked)
    assert {n for n in asked if n.startswith("RICE_")} - set(BY_ENV) == set(), \
        "from_env reads variables the catalogue does not describe"
    assert set(BY_ENV) - asked == set(), "catalogued variables from_env never reads"
    assert {n for n in asked if not n.startswith("RICE_")} == set(FALLBACKS)


@pytest.mark.parametrize(("fallback", "variable"), FALLBACKS.items())
def test_a_fallback_is_named_in_its_variables_default(fallback, variable):
    assert f"`{fallback}`" in BY_ENV[variable].shown_default


def test_a_variable_fills_the_field_its_entry_names():
    """A distinct value in every free-text variable lands in the field the entry names."""
    for entry in SETTINGS:
        if entry.kind not in _FREE_TEXT:
            continue
        value = f"/probe/{entry.env.lower()}"
        got = getattr(PipelineSettings.from_env({entry.env: value}), entry.field)
        if isinstance(got, (frozenset, tuple)):
            assert set(got) == {value}, entry.env
        else:
            assert str(got) == value, entry.env


@pytest.mark.parametrize("entry", SETTINGS, ids=lambda s: s.env)
def test_the_shown_default_is_what_from_env_gives(entry):
    value = getattr(PipelineSettings.from_env({}), entry.field)
    if not entry.default_text:  # a plain value: shown as the field's default, which it must be
        assert value == entry.default
        assert entry.shown_default == shown(value)
    elif shown(value) != "—":  # described in words: the words must name the value
        assert shown(value) in entry.default_text


# What a kind promises, as probes: values from_env must refuse and values it must accept.
def _probes(kind: str) -> tuple[list[str], list[str]] | None:
    if m := re.fullmatch(r"integer ≥ (\d+)", kind):
        low = int(m[1])
        return [str(low - 1), "1.5", "many"], [str(low), str(low + 1000)]
    if m := re.fullmatch(r"integer (\d+)–(\d+)", kind):
        low, high = int(m[1]), int(m[2])
        return [str(low - 1), str(high + 1)], [str(low), str(high)]
    if m := re.fullmatch(r"number ≥ ([\d.]+)", kind):
        low = float(m[1])
        return [str(low / 2), "nan", "much"], [str(low), str(low * 10)]
    if kind == "fraction 0–1":
        return ["-0.01", "1.01", "nan"], ["0", "0.5", "1"]
    if kind == "fraction strictly between 0 and 1":
        return ["0", "1", "1.5"], ["0.01", "0.99"]
    if m := re.fullmatch(r"one of ([a-z/]+)", kind):
        return ["maybe"], m[1].split("/")
    if kind == "cron or `none`":
        return [], ["none", "5 4 * * *"]
    if kind == "model version number":
        return ["0", "v3", "-1"], ["1", "42"]
    if kind == "comma-separated Airflow user ids":
        return ["alice,a b", "-x", "x;y"], ["alice", "alice, bob@example.org"]
    return None


_FREE_TEXT = {"path", "name", "branch", "path in the repository", "e-mail address",
              "connection id", "image reference", "Celery queue", "URL", "webhook id",
              "`owner/name`", "comma-separated `owner/name`", "comma-separated e-mail addresses"}


def test_every_kind_is_probed_or_free_text():
    unknown = {s.kind for s in SETTINGS if _probes(s.kind) is None} - _FREE_TEXT
    assert unknown == set(), "a kind the tests do not know how to check"


@pytest.mark.parametrize("entry", [s for s in SETTINGS if _probes(s.kind)], ids=lambda s: s.env)
def test_the_kind_is_what_from_env_enforces(entry):
    refused, accepted = _probes(entry.kind)
    for value in refused:
        with pytest.raises(SettingsError, match=entry.env):
            PipelineSettings.from_env({entry.env: value})
    for value in accepted:
        settings = PipelineSettings.from_env({entry.env: value})
        got = getattr(settings, entry.field)
        if entry.kind == "cron or `none`":
            assert got == (None if value == "none" else value)
        elif entry.kind.startswith("one of") and isinstance(got, bool):
            assert got == (value == "true")
        elif entry.kind.startswith("comma-separated"):
            assert got == tuple(part.strip() for part in value.split(","))
        else:
            assert str(got) == value or float(got) == float(value)
