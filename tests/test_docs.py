"""The documentation: a short README front page, and long pages under docs/ whose links all resolve.

The README is also the project's page on PyPI, which resolves no relative link: it links the repository's
files by absolute URL, each mapped back to the checkout here. The docs pages are read on GitHub and link
each other relatively. The docs are not part of the wheel: they are read from the checkout, relative to
this file.
"""

import re
from importlib.metadata import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 250
# The Source URL of pyproject.toml's [project.urls], as the installed metadata (and PyPI) carries it.
REPOSITORY = next(
    url.strip()
    for label, _, url in (
        entry.partition(",") for entry in metadata("lerobot_policy_act_rtc_alldelays").get_all("Project-URL")
    )
    if label == "Source"
)
# A file (`blob`) or folder (`tree`) of the default branch, with an optional anchor.
REPOSITORY_LINK = re.compile(
    rf"{re.escape(REPOSITORY)}/(?P<kind>blob|tree)/main/(?P<path>[^#]+)(?P<anchor>#.*)?"
)

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`+[^`]*`+")
LINK = re.compile(r"!?\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def documentation_pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks."""
    lines, in_fence = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text lowercased, punctuation other than `-` and `_`
    dropped, each space turned into `-`."""
    text = LINK.sub(lambda m: m.group(1), heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def heading_anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives the file's headings; a repeated slug gets -1, -2, ... as on GitHub."""
    anchors: set[str] = set()
    for line in prose_lines(path):
        match = HEADING.match(line)
        if match:
            slug = base = github_slug(match.group(2))
            repeat = 0
            while slug in anchors:
                repeat += 1
                slug = f"{base}-{repeat}"
            anchors.add(slug)
    return anchors


def link_targets(path: Path) -> list[str]:
    """The targets of the file's markdown links."""
    targets = []
    for line in prose_lines(path):
        # Code spans are blanked, so that a link's code-formatted text still parses and a `[x](y)` inside
        # a code span is not a link.
        targets += [match.group(2) for match in LINK.finditer(INLINE_CODE.sub("code", line))]
    return targets


def relative_links(path: Path) -> list[str]:
    """The targets of the file's links without a URL scheme: into the repository, or the page itself."""
    return [target for target in link_targets(path) if not SCHEME.match(target)]


def repository_links(path: Path) -> list[str]:
    """The targets of the file's links to the repository's URL."""
    return [target for target in link_targets(path) if target.startswith(f"{REPOSITORY}/")]


def checkout_target(url: str) -> str | None:
    """A repository URL as the equivalent link of the README (at the checkout's root), or None for a URL
    that names no file or folder of the default branch."""
    match = REPOSITORY_LINK.fullmatch(url)
    return match and match["path"] + (match["anchor"] or "")


def broken_url_reason(url: str) -> str | None:
    """Why a repository URL of the README names no file, folder or heading of the checkout, or None."""
    target = checkout_target(url)
    if target is None:
        return "not a file (/blob/main/...) or folder (/tree/main/...) of the repository"
    reason = broken_link_reason(README, target)
    if reason:
        return reason
    # GitHub serves a file under /blob/ and a folder under /tree/.
    kind = "tree" if (ROOT / target.partition("#")[0]).is_dir() else "blob"
    if REPOSITORY_LINK.fullmatch(url)["kind"] != kind:
        return f"{target} is a {'folder' if kind == 'tree' else 'file'}: GitHub serves it under /{kind}/"
    return None


def broken_link_reason(page: Path, target: str) -> str | None:
    """Why a relative link of `page` does not resolve, or None when it does."""
    file_part, _, anchor = target.partition("#")
    linked = (page.parent / file_part).resolve() if file_part else page
    if not linked.exists():
        return f"{linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked} does not exist"
    if anchor:
        if linked.suffix != ".md":
            return f"an anchor into {linked.name}, which is not a markdown file"
        if anchor not in heading_anchors(linked):
            return f"{linked.relative_to(ROOT)} has no heading with the anchor #{anchor}"
    return None


def test_github_slug_follows_githubs_rules():
    assert github_slug("LeRobot 0.6: `lerobot-rollout --inference.type=rtc`") == (
        "lerobot-06-lerobot-rollout---inferencetypertc"
    )
    assert github_slug("Training on your robot's data") == "training-on-your-robots-data"
    assert github_slug("What this package adds to the design note's reference code") == (
        "what-this-package-adds-to-the-design-notes-reference-code"
    )
    assert github_slug("Does it train better?") == "does-it-train-better"
    assert github_slug("rtc_max_delay and [the docs](docs/x.md)") == "rtc_max_delay-and-the-docs"


def test_every_relative_link_in_the_readme_and_docs_resolves_to_a_file_and_heading():
    pages = documentation_pages()
    assert len(pages) > 1, "docs/ holds no markdown page"
    checked, broken = 0, []
    for page in pages:
        for target in relative_links(page):
            checked += 1
            reason = broken_link_reason(page, target)
            if reason:
                broken.append(f"{page.relative_to(ROOT)}: ({target}): {reason}")
    assert checked, "no relative link found: the link parser is broken"
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_links_other_files_by_absolute_url_as_pypi_needs():
    """PyPI would resolve `docs/x.md` against its own site: only links within the page may be relative."""
    relative = [target for target in relative_links(README) if not target.startswith("#")]
    assert not relative, f"relative links in README.md, broken on PyPI: {relative}"


def test_every_repository_url_in_the_readme_resolves_to_a_file_and_heading_of_the_checkout():
    urls = repository_links(README)
    assert urls, f"no link to {REPOSITORY} in README.md: the link parser is broken"
    broken = [f"({url}): {reason}" for url in urls if (reason := broken_url_reason(url))]
    assert not broken, "broken links in README.md:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    targets = [target for url in repository_links(README) if (target := checkout_target(url))]
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in targets}
    orphans = [
        str(page.relative_to(ROOT)) for page in documentation_pages()[1:] if page.resolve() not in linked
    ]
    assert not orphans, f"docs pages the README does not link to: {orphans}"


def test_readme_is_a_front_page_of_at_most_250_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; the front page holds at most {README_MAX_LINES}: move long "
        "sections into docs/ and link to them"
    )
