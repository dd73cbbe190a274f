"""The docs stand on their own: code, help texts and docs cite only files inside the repository, and every relative
link of the README and docs/ reaches an existing file and heading."""
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".sh", ".toml", ".txt", ".json", ".cfg", ".yaml", ".yml"}
# Places outside the repository, and the section tags of documents that lived there.
OUTSIDE = re.compile(r"\bshared/[\w.-]+\.\w+|\.\./shared\b|§\s*\d|\(A\d{1,2}\b")
DOC_CITATION = re.compile(r"((?:[\w.-]+/)*[\w.-]+\.md)(?:#([\w-]+))?")  # docs/method.md#skip-fusion, ../x/y.md
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+")
WRITTEN_BY_TOOLS = {"report.md"}  # markdown files the tools write (tools/ablate.sh's report), not documents


def repository_files() -> list[Path]:
    """Tracked files plus untracked ones git does not ignore (so a new file is checked before its commit)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return sorted(REPO / name for name in listed if (REPO / name).is_file())


def text_files() -> list[Path]:
    return [path for path in repository_files() if path.suffix in TEXT_SUFFIXES]


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"`|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def without_code(markdown: str) -> str:
    """Markdown without fenced code blocks and inline code (links there are not rendered)."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S))


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for line in without_code(path.read_text()).splitlines():
        if match := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line):
            base = slug(match.group(1))
            count = seen.get(base, 0)
            found.add(base if count == 0 else f"{base}-{count}")  # GitHub numbers repeated headings
            seen[base] = count + 1
    return found


def link_problem(source: Path, target: str, base: Path) -> str | None:
    """Why ``target`` (a path relative to ``base``, optionally with ``#anchor``) is broken, or None."""
    path_part, _, anchor = target.partition("#")
    resolved = (base / path_part).resolve() if path_part else source
    if REPO not in resolved.parents and resolved != REPO:
        return f"{target}: outside the repository"
    if not resolved.exists():
        return f"{target}: no such file"
    if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
        return f"{target}: no heading with anchor #{anchor} in {resolved.relative_to(REPO)}"
    return None


def test_the_checked_files_include_code_docs_and_help_texts():
    names = {str(p.relative_to(REPO)) for p in text_files()}
    assert {"README.md", "docs/method.md", "pseudolabel/cam/skipcam.py", "tools/gen_pseudo.sh"} <= names


def cited_by_the_checked_files():
    """The files whose text is checked; this file is left out, as it spells the forbidden patterns."""
    return [path for path in text_files() if path != Path(__file__).resolve()]


def test_nothing_points_outside_the_repository():
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
             for path in cited_by_the_checked_files()
             for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             if OUTSIDE.search(line)]
    assert not found, "cite docs/method.md or docs/evaluation.md instead:\n" + "\n".join(found)


def test_every_cited_document_is_in_the_repository():
    """``*.md`` names in code, help texts and docs resolve (from the citing file's folder or the repository root) to
    a file in the repository, and a ``#anchor`` to one of its headings."""
    problems = []
    for path in cited_by_the_checked_files():
        text = URL.sub("", path.read_text(errors="replace"))
        for match in DOC_CITATION.finditer(text):
            if match.group(1).rpartition("/")[2] in WRITTEN_BY_TOOLS:
                continue
            base = next((b for b in (path.parent, REPO) if (b / match.group(1)).is_file()), path.parent)
            if problem := link_problem(path, match.group(0), base):
                problems.append(f"{path.relative_to(REPO)}: {problem}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_markdown_links_reach_files_and_headings(doc):
    problems = []
    for target in MARKDOWN_LINK.findall(without_code(doc.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        if problem := link_problem(doc, target, doc.parent):
            problems.append(problem)
    assert not problems, f"{doc.relative_to(REPO)}:\n" + "\n".join(problems)


def test_method_doc_is_linked_from_the_readme_and_stage_one():
    assert "(docs/method.md)" in (REPO / "README.md").read_text()
    assert "(method.md)" in (REPO / "docs" / "stage_one.md").read_text()


def test_github_anchor_rules():
    assert slug("Test (TTA, CRF)") == "test-tta-crf"
    assert slug("The paper's `--tau` and τ") == "the-papers---tau-and-τ"
    heading_file = anchors(REPO / "docs" / "method.md")
    assert {"skip-fusion", "class-aware-attention-affinity", "open-choices-and-their-flags"} <= heading_file


def test_design_lists_the_public_api_of_each_subpackage():
    """The subpackage table of docs/design.md names exactly what each ``__init__`` exports."""
    import importlib

    rows = re.findall(r"^\| `pseudolabel/(\w+)/` \|.*\| ([^|]+) \|$", (REPO / "docs" / "design.md").read_text(), re.M)
    assert {name for name, _ in rows} == {"cam", "sam", "storage", "viewer"}
    for name, listed in rows:
        exported = importlib.import_module(f"pseudolabel.{name}").__all__
        assert set(re.findall(r"`(\w+)`", listed)) == set(exported), name
