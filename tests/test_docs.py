"""README.md and docs/*.md stay true to the repository: every relative link and #anchor resolves, and every
``moco-ref …`` command they show names a real command, subcommand and flags.

The commands are checked against the click group itself (``moco_ref.cli.main.cli``), in this process, so the
test reads what ``moco-ref … --help`` would print without starting a subprocess.  A failure names the file,
the line and what is wrong.  Each checker is a function of a file's text, so the tests at the end feed it a
bad link or a made-up flag on purpose and see it caught.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from pathlib import Path

import click
import pytest

from moco_ref.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_LINES = 200


def name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# ------------------------------------------------------------------ reading markdown

FENCE = re.compile(r"^\s*(```+|~~~+)")


def split_code(text: str):
    """(prose, blocks): prose is the text with every fenced block blanked out (line numbers kept);
    blocks is [(first line number, [lines])] of the fenced blocks' contents."""
    prose, blocks, fence, block = [], [], None, None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence, block = match.group(1)[0] * 3, (number + 1, [])
            prose.append("")
        elif fence is not None and match and match.group(1).startswith(fence):
            blocks.append(block)
            fence = None
            prose.append("")
        elif fence is not None:
            block[1].append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), blocks


INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)


def inline_code(prose: str):
    """[(line number, content)] of the inline code spans; a span may run over a line break."""
    return [(prose.count("\n", 0, m.start()) + 1, " ".join(m.group(2).split())) for m in INLINE_CODE.finditer(prose)]


def without_inline_code(prose: str) -> str:
    return INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: links reduced to their text, lower-case, every character that is not
    a letter, a digit, a space, '-' or '_' dropped, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    kept = "".join(c for c in text if c.isalnum() or c in " -_" or unicodedata.category(c).startswith("M"))
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a markdown file's headings (outside code blocks), with GitHub's -1, -2 for repeats."""
    seen: dict[str, int] = {}
    result = set()
    for line in split_code(text)[0].splitlines():
        match = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(f"{base}-{count}" if count else base)
    return result


# ------------------------------------------------------------------ links

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def broken_links(path: Path, text: str) -> list[str]:
    """Each relative link of the markdown ``text`` (the file at ``path``) whose file is missing or whose
    #anchor is no heading of its file, as 'FILE:LINE: what is wrong'."""
    problems = []
    prose = without_inline_code(split_code(text)[0])
    for match in LINK.finditer(prose):
        target = match.group(1)
        line = prose.count("\n", 0, match.start()) + 1
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        where = f"{name(path)}:{line}: the link ({target})"
        if file_part and not linked.exists():
            problems.append(f"{where} points to {file_part}, which does not exist")
            continue
        if anchor:
            if linked.suffix != ".md" or linked.is_dir():
                problems.append(f"{where} has an anchor into {file_part}, which is not a markdown file")
                continue
            heads = anchors(text if linked == path else linked.read_text())
            if anchor not in heads:
                problems.append(f"{where} names #{anchor}, which is no heading of {name(linked)}")
    return problems


# ------------------------------------------------------------------ commands

COMMAND = re.compile(r"(?<![\w/.-])(?:moco-ref|python -m moco_ref)(?=[ \t]|$)")
SHELL_END = re.compile(r"\s(?:&&|\|\||;|\||>|2>|<)\s|\s#|`")
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*|.*(?:…|\.\.\.).*|<[^>]*>.*)$")


def takes_value(option: click.Option) -> bool:
    return not option.is_flag and not option.count


def options_of(command: click.Command) -> dict[str, click.Parameter]:
    found = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for spelling in param.opts + param.secondary_opts:
                found[spelling] = param
    with click.Context(command) as context:
        for spelling in command.get_help_option_names(context):
            found[spelling] = click.Option([spelling], is_flag=True)
    return found


def tokens_of(rest: str) -> list[str]:
    rest = SHELL_END.split(" " + rest, maxsplit=1)[0].replace("\\|", "|")
    try:
        words = shlex.split(rest)
    except ValueError:  # an apostrophe in prose
        words = rest.split()
    return [w.strip("[]") for w in words if w.strip("[]")]


def check_invocation(words: list[str], group: click.Group = cli) -> list[str]:
    """What is wrong with ``moco-ref WORDS``: an unknown command or subcommand, an unknown flag, a value
    outside an argument's choices, or more arguments than the command takes."""
    command: click.Command = group
    spelled = "moco-ref"
    i = 0
    while isinstance(command, click.Group):
        if i == len(words):
            return []
        word = words[i]
        if word.startswith("-"):
            if word.split("=")[0] not in options_of(command):
                return [f"{spelled} has no option {word}"]
            return []  # --help, --version
        if PLACEHOLDER.match(word):
            return []
        if word not in command.commands:
            return [f"{spelled} has no command {word!r} (its commands: {', '.join(sorted(command.commands))})"]
        command, spelled, i = command.commands[word], f"{spelled} {word}", i + 1

    problems, positional = [], []
    options = options_of(command)
    while i < len(words):
        word = words[i]
        if word.startswith("-") and len(word) > 1 and not re.match(r"^-\d", word):
            spelling, equals, _ = word.partition("=")
            for alternative in spelling.split("|"):
                if alternative not in options:
                    problems.append(f"{spelled} has no option {alternative}")
            option = options.get(spelling)
            unknown_with_value = option is None and i + 1 < len(words) and not words[i + 1].startswith("-")
            if (isinstance(option, click.Option) and takes_value(option) or unknown_with_value) and not equals:
                i += 1  # its value (after an unknown flag, read the next word as its value: one problem, not two)
        elif word not in ("…", "..."):
            positional.append(word)
        i += 1

    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    slots = float("inf") if any(a.nargs == -1 for a in arguments) else sum(a.nargs for a in arguments)
    if len(positional) > slots:
        problems.append(f"{spelled} takes {slots} argument(s), given {positional}")
    for argument, word in zip((a for a in arguments for _ in range(max(a.nargs, 1))), positional):
        if isinstance(argument.type, click.Choice) and not PLACEHOLDER.match(word):
            for alternative in word.split("|"):
                if alternative not in argument.type.choices:
                    problems.append(f"{spelled}: {alternative!r} is not one of {', '.join(argument.type.choices)}")
    return problems


def commands_shown(text: str):
    """[(line number, the command as shown, its words after moco-ref)] for every ``moco-ref …`` in a code
    block or an inline code span whose next word reads as a command or a flag (not "moco-ref's", "moco-ref:")."""
    prose, blocks = split_code(text)
    places = [(first + k, line) for first, lines in blocks for k, line in enumerate(lines)]
    places = sorted(places + inline_code(prose), key=lambda place: place[0])
    found = []
    for line, code in places:
        for match in COMMAND.finditer(code):
            words = tokens_of(code[match.end() :])
            if words and not re.match(r"^(?:-|[a-z][a-z0-9-]*$|[A-Z][A-Z_]*$)", words[0]):
                continue  # prose that names the program, e.g. "another moco-ref run:"
            shown = (code[match.start() :].split("  #")[0]).strip()
            found.append((line, shown, words))
    return found


def wrong_commands(path: Path, text: str) -> list[str]:
    return [
        f"{name(path)}:{line}: `{shown}`: {problem}"
        for line, shown, words in commands_shown(text)
        for problem in check_invocation(words)
    ]


# ------------------------------------------------------------------ the tests on the real files


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_relative_link_and_anchor_resolves(page):
    problems = broken_links(page, page.read_text())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_command_shown_exists_with_its_flags(page):
    problems = wrong_commands(page, page.read_text())
    assert not problems, "\n".join(problems)


def test_the_readme_shows_every_command_and_each_is_checked():
    """Not a vacuous pass: the checker finds the README's commands, one of each top-level command at least."""
    shown = {words[0] for _, _, words in commands_shown((ROOT / "README.md").read_text()) if words}
    assert set(cli.commands) <= shown, f"the README shows no example of: {sorted(set(cli.commands) - shown)}"


def test_every_docs_page_is_linked_from_the_readme_and_links_back():
    readme = (ROOT / "README.md").read_text()
    problems = []
    for page in PAGES[1:]:
        if f"(docs/{page.name}" not in readme:
            problems.append(f"README.md has no link to {name(page)}")
        if "(../README.md" not in page.read_text():
            problems.append(f"{name(page)} has no link back to the README")
    assert PAGES[1:], "docs/ holds no pages"
    assert not problems, "\n".join(problems)


def test_the_readme_stays_a_front_door():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_LINES, f"README.md has {lines} lines, more than {README_LINES}: move the detail to docs/"


# ------------------------------------------------------------------ the checkers, broken on purpose


def test_slugs_follow_githubs_rules():
    assert slug("The Python API") == "the-python-api"
    assert slug("Recipes (`--preset`)") == "recipes---preset"
    assert slug("moco-ref eval, export, plot") == "moco-ref-eval-export-plot"
    assert slug("Tests: the specification") == "tests-the-specification"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1", "a-2"}


def test_the_link_checker_finds_a_missing_file_and_an_unknown_anchor():
    scratch = ROOT / "docs" / "scratch.md"  # never written: the checker reads only the text given
    text = "\n".join(
        [
            "# Scratch",
            "[fine](../README.md#the-python-api) and [fine too](#scratch) and [web](https://example.org/x#y)",
            "[gone](no-such-page.md)",
            "[bad anchor](../README.md#no-such-heading)",
            "[bad anchor here](#nowhere)",
            "`[in code](not-checked.md)`",
            "```",
            "[in a block](not-checked-either.md)",
            "```",
        ]
    )
    problems = broken_links(scratch, text)
    assert len(problems) == 3, problems
    assert problems[0].startswith("docs/scratch.md:3: ") and "no-such-page.md, which does not exist" in problems[0]
    assert problems[1].startswith("docs/scratch.md:4: ") and "#no-such-heading" in problems[1]
    assert problems[2].startswith("docs/scratch.md:5: ") and "#nowhere" in problems[2]


def test_the_command_checker_finds_a_made_up_command_subcommand_flag_and_choice():
    scratch = ROOT / "docs" / "scratch.md"
    text = "\n".join(
        [
            "Fine: `moco-ref train --epochs 3 --mlp -b 128`, `moco-ref eval knn --checkpoint RUN -k 20`,",
            "`moco-ref ablate queue --values 16,64`, `moco-ref --version`, and the moco-ref's prose.",
            "Wrong: `moco-ref trian`, `moco-ref eval knnn --checkpoint RUN`,",
            "`moco-ref train --made-up 3`, `moco-ref ablate temperature`, `moco-ref gradcheck extra`.",
            "```bash",
            "pip install -e . && mpiexec -n 2 moco-ref train --moco-k 4096   # fine",
            "moco-ref eval knn --checkpoint RUN --lr 3                         # --lr is eval linear's",
            "```",
        ]
    )
    problems = wrong_commands(scratch, text)
    expected = [
        ("docs/scratch.md:3:", "moco-ref has no command 'trian'"),
        ("docs/scratch.md:3:", "moco-ref eval has no command 'knnn'"),
        ("docs/scratch.md:4:", "moco-ref train has no option --made-up"),
        ("docs/scratch.md:4:", "moco-ref ablate: 'temperature' is not one of"),
        ("docs/scratch.md:4:", "moco-ref gradcheck takes 0 argument(s)"),
        ("docs/scratch.md:7:", "moco-ref eval knn has no option --lr"),
    ]
    assert len(problems) == len(expected), "\n".join(problems)
    for problem, (where, what) in zip(problems, expected):
        assert problem.startswith(where) and what in problem, (problem, where, what)
