"""README.md and docs/: the front page stays small, links between the pages resolve, and the tests the reliability
page names exist.

The checks are functions of the text, so each is shown failing on a broken page here as well as passing on the
real ones.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README_LIMIT = 12 * 1024
# The flat modules the package replaced: a page naming one describes code that no longer exists.
OLD_SCRIPT = re.compile(r"\bhls_(?:analytics|graphql|health|icy|launcher|logparse|logreader|metrics|nowplaying|"
                        r"sessions|snapshot|spool|station|status|sync|watch|watchdog)\.py\b"
                        r"|(?<!operations/)hlsctl\.py\b|/opt/hls/lib\b")
# [text](target): inline links, not images' alt texts nor code.
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text without code blocks and spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation other than - and _ dropped, spaces to dashes."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    return {anchor(line.lstrip("#")) for line in FENCE.sub("", text).splitlines() if re.match(r"#{1,6} ", line)}


def broken_links(page: Path) -> list[str]:
    """Relative links of one page whose file or #anchor does not exist."""
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        path_part, _, fragment = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{page.name}: {target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked.read_text(encoding="utf-8")):
            broken.append(f"{page.name}: {target}: no such heading")
    return broken


def missing_tests(text: str) -> list[str]:
    """Test files a page names that neither a molecule scenario nor tests/unit holds."""
    names = set(re.findall(r"`((?:tests/unit/)?test_\w+\.py)`", text))
    return sorted(name for name in names
                  if not (REPO / name).exists() and not any(REPO.glob(f"molecule/*/tests/{name}")))


def test_readme_is_a_front_page_of_at_most_12_kb() -> None:
    assert (REPO / "README.md").stat().st_size <= README_LIMIT


def test_links_between_readme_and_docs_resolve() -> None:
    assert [problem for page in pages() for problem in broken_links(page)] == []


def test_broken_links_are_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## How it runs\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](other.md#how-it-runs) [self](#page) [web](https://example.org/x)\n"
                    "[gone](missing.md) [bad anchor](other.md#nowhere) [bad self](#nope)\n"
                    "`[not a link](missing.md)`\n\n```\n[nor this](missing.md)\n```\n")
    assert broken_links(page) == ["page.md: missing.md: no such file", "page.md: other.md#nowhere: no such heading",
                                  "page.md: #nope: no such heading"]


def test_anchors_follow_github() -> None:
    assert anchor(" Reliability: what it survives") == "reliability-what-it-survives"
    assert anchor("hls_nginx_port") == "hls_nginx_port"
    assert anchor("role hls_nginx") == "role-hls_nginx"
    assert anchor("`hlsctl`") == "hlsctl"


def test_tests_named_by_the_reliability_page_exist() -> None:
    text = (REPO / "docs/reliability.md").read_text(encoding="utf-8")
    assert "test_faults.py" in text
    assert missing_tests(text) == []


def test_a_missing_test_is_found() -> None:
    assert missing_tests("`test_faults.py`, `tests/unit/test_sync.py`, `test_gone.py`, `tests/unit/test_gone.py`") == [
        "test_gone.py", "tests/unit/test_gone.py"]


def test_no_page_names_the_old_flat_scripts() -> None:
    # docs/benchmarks.md records what was measured, with the names of the day.
    named = [f"{page.name}: {match.group(0)}" for page in pages() if page.name != "benchmarks.md"
             for match in OLD_SCRIPT.finditer(page.read_text(encoding="utf-8"))]
    assert named == []
    assert OLD_SCRIPT.search("files/scripts/hls_sync.py") and OLD_SCRIPT.search("files/scripts/hlsctl.py")
    assert OLD_SCRIPT.search("/opt/hls/lib/")
    assert not OLD_SCRIPT.search("radio_hls/stations/sync.py, hls-sync, hls_sync_poll_seconds, operations/hlsctl.py")
