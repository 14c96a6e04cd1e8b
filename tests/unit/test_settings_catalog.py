"""The settings catalogues tell the truth about `PipelineSettings.from_env`,
`WebhookSettings.from_env` and `ToolSettings.from_env`, and the settings tables of
docs/configuration.md are the ones generated from them."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path

import pytest

from rice_mlops.core.readers import SettingsError
from rice_mlops.operations import settings_catalog
from rice_mlops.operations.settings_catalog import shown
from rice_mlops.operations.settings_tables import (
    CATALOGUES,
    END,
    START,
    Catalogue,
    main,
    markdown_table,
)

# The page `scripts/settings-table` writes the generated tables into.
CONFIGURATION = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
ENTRIES = [entry for catalogue in CATALOGUES for entry in catalogue.entries]
BY_ENV = {s.env: s for s in ENTRIES}
# Variables a from_env reads that no entry of its catalogue names: fallbacks of a catalogued
# variable, each named in that variable's default.
FALLBACKS = {
    "settings-table": {"DOCKER_HOST": "RICE_DOCKER_SOCKET",
                       "AIRFLOW__API__BASE_URL": "RICE_AIRFLOW_URL"},
    "webhook-settings-table": {"AIRFLOW__API__BASE_URL": "AIRFLOW_WEBHOOK_API_URL",
                               "RICE_GITHUB_REPOSITORY": "GITHUB_WEBHOOK_REPOSITORIES"},
    "tool-settings-table": {},
}
_by_name = pytest.mark.parametrize("catalogue", CATALOGUES, ids=lambda c: c.name)


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


@_by_name
def test_the_configuration_page_table_is_the_generated_one(catalogue: Catalogue):
    page = CONFIGURATION.read_text(encoding="utf-8")
    start, end = page.index(catalogue.start), page.index(catalogue.end)
    assert page[start + len(catalogue.start):end].strip() == \
        markdown_table(catalogue.entries).strip(), \
        f"docs/configuration.md's {catalogue.name} is stale: run scripts/settings-table"
    assert main(["--check", str(CONFIGURATION)]) == 0


def test_scripts_settings_table_targets_the_configuration_page():
    script = (CONFIGURATION.parents[1] / "scripts" / "settings-table").read_text(encoding="utf-8")
    assert script.rstrip().endswith('"$action" docs/configuration.md')


def test_check_mode_fails_on_a_stale_table_and_write_mode_fixes_it(tmp_path, capsys):
    readme = tmp_path / "README.md"
    others = "".join(f"{c.start}\n{c.end}\n" for c in CATALOGUES[1:])
    readme.write_text(f"# x\n\n{START}\n| `RICE_EPOCHS` | 3 | | |\n{END}\n\n{others}after\n")
    assert main(["--check", str(readme)]) == 1
    assert "run scripts/settings-table" in capsys.readouterr().err
    assert main(["--write", str(readme)]) == 0
    written = "".join(f"{c.start}\n{markdown_table(c.entries)}{c.end}\n" for c in CATALOGUES[1:])
    assert readme.read_text() == \
        f"# x\n\n{START}\n{markdown_table()}{END}\n\n{written}after\n"
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


def test_every_variable_is_catalogued_once():
    assert len(BY_ENV) == len(ENTRIES), "a variable is catalogued twice"


@_by_name
def test_every_field_has_exactly_one_entry_and_every_entry_a_field(catalogue: Catalogue):
    assert {entry.of for entry in catalogue.entries} == {catalogue.of}
    counts = Counter(s.field for s in catalogue.entries)
    names = {f.name for f in fields(catalogue.of)}
    assert {field for field, n in counts.items() if n > 1} == set()
    assert names - set(counts) == set(), "fields without a catalogue entry"
    assert set(counts) - names == set(), "entries naming no field"


@_by_name
def test_every_variable_from_env_reads_is_catalogued_and_every_catalogued_one_is_read(
        catalogue: Catalogue):
    env = RecordingEnv()
    catalogue.of.from_env(env)
    asked = set(env.asked)
    catalogued = {entry.env for entry in catalogue.entries}
    fallbacks = FALLBACKS[catalogue.name]
    assert asked - catalogued - set(fallbacks) == set(), \
        "from_env reads variables the catalogue does not describe"
    assert catalogued - asked == set(), "catalogued variables from_env never reads"
    assert set(fallbacks) <= asked


@pytest.mark.parametrize(("fallback", "variable"),
                         [pair for c in CATALOGUES for pair in FALLBACKS[c.name].items()])
def test_a_fallback_is_named_in_its_variables_default(fallback, variable):
    assert f"`{fallback}`" in BY_ENV[variable].shown_default


def test_a_variable_fills_the_field_its_entry_names():
    """A distinct value in every free-text variable lands in the field the entry names."""
    for entry in ENTRIES:
        if entry.kind not in _FREE_TEXT:
            continue
        value = f"/probe/{entry.env.lower()}"
        got = getattr(entry.of.from_env({entry.env: value}), entry.field)
        if isinstance(got, (frozenset, tuple)):
            assert set(got) == {value}, entry.env
        else:
            assert str(got) == value, entry.env


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda s: s.env)
def test_the_shown_default_is_what_from_env_gives(entry):
    value = getattr(entry.of.from_env({}), entry.field)
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
        return [str(low / 2), "nan", "inf", "much"], [str(low), str(low * 10)]
    if kind == "number > 0":
        return ["0", "-1", "nan", "inf", "soon"], ["0.5", "3600"]
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
    if kind == "lower-case name, at most 40":
        return ["A", "a b", "x" * 41, "-x"], ["rice-serving", "stack2"]
    if kind == "two TCP ports":
        return ["8502", "8502,8502", "0,1", "a,b", "1,2,3"], ["9001, 9002"]
    if kind == "Docker network name":
        return ["/x", "a b", "x" * 65, "-x"], ["rice-serving", "net_2.b"]
    if kind == "three IPv4 addresses":
        return ["10.0.0.1", "10.0.0.1,10.0.0.2,x", "10.0.0.1,10.0.0.1,10.0.0.2",
                "1,2,3"], ["172.31.85.10, 172.31.85.11, 172.31.85.12"]
    if kind == "rising percentages ending at 100":
        return ["50,10,100", "0,100", "10,50", "x", "10,10,100"], ["100", "5, 25, 100"]
    if kind == "comma-separated module names, or `none`":
        return ["os; import evil", "../x", "mlflow .tracking", ","], ["docker, a.b_c"]  # none: ()
    if kind == "comma-separated `owner/name`, or `*`":
        return ["acme", "acme/rice/x", "../x", "acme/rice,-x/y"], ["acme/rice", "a/b, c/d.e", "*"]
    if kind == "comma-separated Airflow user ids":
        return ["alice,a b", "-x", "x;y"], ["alice", "alice, bob@example.org"]
    return None


_FREE_TEXT = {"path", "name", "branch", "path in the repository", "e-mail address",
              "connection id", "image reference", "Celery queue", "URL", "webhook id",
              "`owner/name`", "comma-separated `owner/name`", "comma-separated e-mail addresses",
              "secret", "secret, ≥ 32 characters", "Airflow Variable key", "DAG id",
              "Airflow user id", "registry login", "comma-separated name=grant"}
# Read to derive a field, not to fill it with what it holds.
_DERIVED = {"Airflow's database URL"}


def test_every_kind_is_probed_or_free_text():
    unknown = {s.kind for s in ENTRIES if _probes(s.kind) is None} - _FREE_TEXT - _DERIVED
    assert unknown == set(), "a kind the tests do not know how to check"


@pytest.mark.parametrize("entry", [s for s in ENTRIES if _probes(s.kind)], ids=lambda s: s.env)
def test_the_kind_is_what_from_env_enforces(entry):
    refused, accepted = _probes(entry.kind)
    for value in refused:
        with pytest.raises(SettingsError, match=entry.env):
            entry.of.from_env({entry.env: value})
    for value in accepted:
        settings = entry.of.from_env({entry.env: value})
        got = getattr(settings, entry.field)
        if entry.kind == "cron or `none`":
            assert got == (None if value == "none" else value)
        elif entry.kind.startswith("one of") and isinstance(got, bool):
            assert got == (value == "true")
        elif entry.kind in ("two TCP ports", "rising percentages ending at 100"):
            assert got == tuple(int(part) for part in value.split(","))
        elif entry.kind in ("three IPv4 addresses",) or entry.kind.startswith("comma-separated"):
            parts = tuple(part.strip() for part in value.split(","))
            assert set(got) == set(parts) if isinstance(got, frozenset) else got == parts
        else:
            assert str(got) == value or float(got) == float(value)


def test_the_catalogue_needs_only_the_standard_library():
    """`scripts/settings-table` runs under whatever python3 there is (no virtualenv needed)."""
    import subprocess
    import sys

    probe = ("import sys; before = set(sys.modules); "
             "import rice_mlops.operations.settings_tables; "
             "print(sorted({m.split('.')[0] for m in set(sys.modules) - before}"
             " - set(sys.stdlib_module_names) - {'rice_mlops'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"
