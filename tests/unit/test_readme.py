"""The README tells the truth about the DAG and stays short: its diagram names exactly the tasks
of `rice_classifier_cicd` and draws exactly their dependencies, it is at most 300 lines, and
every relative link in it and in docs/ points to a file (and heading) that exists."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DAG_ID = "rice_classifier_cicd"
MAX_LINES = 300
# Every Markdown page whose relative links must resolve.
PAGES = [README, REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_ARROW = re.compile(r"\s*(-->|-\.->)\s*")
_NODE = re.compile(r"[a-z][a-z0-9_]*")
# A node declared with a shape and a label: id{{label}}, id([label]), id[label], id(label).
_DECLARED = re.compile(r"([a-z][a-z0-9_]*)"
                       r"(\{\{([^}]*)\}\}|\(\[([^\]]*)\]\)|\[([^\]]*)\]|\(([^)]*)\))")


def diagram(text: str) -> str:
    """The body of the README's one mermaid flowchart."""
    blocks = re.findall(r"^```mermaid\n(.*?)^```", text, re.S | re.M)
    assert len(blocks) == 1, "the README should hold exactly one mermaid diagram"
    body = blocks[0]
    assert body.lstrip().startswith("flowchart"), "the diagram should be a mermaid flowchart"
    return body


def parse(body: str) -> tuple[set[str], dict[str, set[str]], set[tuple[str, str]]]:
    """Nodes, edges (upstream -> downstreams) and the solid edges of a flowchart that uses only
    `a --> b`, `a -.-> b & c` and shape declarations; any other line is an error, so a typo
    cannot drop an edge unnoticed."""
    nodes: set[str] = set()
    edges: dict[str, set[str]] = {}
    solid: set[tuple[str, str]] = set()
    for number, raw in enumerate(body.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("%%") or line.startswith("flowchart"):
            continue
        if m := _DECLARED.fullmatch(line):
            label = next(g for g in m.groups()[2:] if g is not None)
            assert label == m[1], f"line {number}: node {m[1]} is labelled {label!r}"
            nodes.add(m[1])
            continue
        parts = _ARROW.split(line)
        assert len(parts) >= 3, f"line {number} is neither an edge nor a node: {raw!r}"
        groups = [[name.strip() for name in part.split("&")] for part in parts[::2]]
        for group in groups:
            for name in group:
                assert _NODE.fullmatch(name), f"line {number}: {name!r} is not a task id"
                nodes.add(name)
        for ups, arrow, downs in zip(groups[:-1], parts[1::2], groups[1:], strict=True):
            for up in ups:
                for down in downs:
                    edges.setdefault(up, set()).add(down)
                    if arrow == "-->":
                        solid.add((up, down))
    return nodes, edges, solid


@pytest.fixture(scope="module")
def dag():
    """The pipeline as it parses on the defaults (as tests/dags/test_dag_integrity.py loads it)."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("RICE_")]:
            patch.delenv(name)
        bag = DagBag(dag_folder=str(REPO / "dags"))
    assert DAG_ID in bag.dags, bag.import_errors
    return bag.dags[DAG_ID]


@pytest.fixture(scope="module")
def drawn():
    return parse(diagram(README.read_text(encoding="utf-8")))


def test_the_diagram_names_exactly_the_dags_tasks(dag, drawn):
    nodes, _, _ = drawn
    tasks = {task.task_id for task in dag.tasks}
    assert {"missing from the diagram": tasks - nodes, "not a task": nodes - tasks} == \
        {"missing from the diagram": set(), "not a task": set()}


def test_the_diagram_draws_exactly_the_dags_edges_task_by_task(dag, drawn):
    _, edges, _ = drawn
    wrong = {}
    for task in sorted(dag.tasks, key=lambda t: t.task_id):
        real, shown = set(task.downstream_task_ids), edges.get(task.task_id, set())
        if real != shown:
            wrong[task.task_id] = {"not drawn": sorted(real - shown),
                                   "drawn, not in the DAG": sorted(shown - real)}
    assert wrong == {}, "edges upstream -> downstream that differ, by upstream task"


def test_solid_arrows_are_the_order_and_dotted_ones_the_further_upstreams(dag, drawn):
    """The legend's promise: a solid arrow is an edge no longer path implies (the transitive
    reduction), a dotted one an edge that a longer path implies too."""
    _, _, solid = drawn
    down = {task.task_id: set(task.downstream_task_ids) for task in dag.tasks}

    def reachable_without(start: str, edge: tuple[str, str]) -> set[str]:
        seen: set[str] = set()
        stack = [d for d in down[start] if (start, d) != edge]
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(down[node])
        return seen

    reduction = {(up, d) for up, ds in down.items() for d in ds
                 if d not in reachable_without(up, (up, d))}
    assert solid == reduction


def test_the_parser_sees_a_task_deleted_from_the_diagram(dag):
    """Deleting a task's lines from the diagram fails the two tests above."""
    body = diagram(README.read_text(encoding="utf-8"))
    cut = "\n".join(line for line in body.splitlines()
                    if not re.search(r"\bsmoke_test\b", line))
    nodes, edges, _ = parse(cut)
    assert "smoke_test" not in nodes
    assert edges.get("build_image", set()) != set(dag.get_task("build_image").downstream_task_ids)


def test_the_readme_is_at_most_300_lines():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"README.md has {lines} lines: move detail into docs/"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.M)}


def _relative_links(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # code blocks
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans
    targets = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_to_a_file_that_exists(page):
    broken = []
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no such heading")
    assert broken == []


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[gone](missing.md) [here](#title) [ok](page.md#title)\n"
                    "`[not a link](nowhere.md)`\n```\n[nor](this.md)\n```\n")
    assert _relative_links(page) == ["missing.md", "#title", "page.md#title"]
    assert _anchors(page) == {"title"}


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in _relative_links(README)}
    unlinked = [p.name for p in sorted((REPO / "docs").glob("*.md")) if p.resolve() not in linked]
    assert unlinked == []
