"""
Docs that cannot rot: every repository path, config file, config key, command-line flag, make
target, ``iai_d2`` name and markdown link written in README.md, docs/, projects/*/README.md,
datasets/README.md and benchmarks/**/README.md must exist in the tree.

Names are read from code only (fenced blocks and inline code spans) and from markdown links;
prose is not parsed. What counts as what:

- path: a code token with a ``/`` whose first component is a repository directory (``REPO_DIRS``),
  or a subdirectory of the document's own folder (``track_baseline/roi_heads.py`` in
  projects/TrackBaseline/README.md); ``*`` globs and ``{a,b}`` alternatives are expanded. Under
  ``datasets/`` only ``.md`` / ``.py`` files are repository files (the rest is data the user
  downloads or generates); ``output/...``, absolute paths and URLs name things the user creates.
- config file: a bare ``name.yaml`` must be one of the repository's configs.
- config key: an upper-case dotted name (``MODEL.IAI.NUM_IDS``, ``SOLVER.CLIP_GRADIENTS.*``) must be a
  node or key of ``get_cfg()`` + ``add_trackbaseline_config`` (which adds the iai_d2 and CondInst
  keys) + ``add_mask2former_config``; a name that does not start at a root (``MEMORY.NEW_ID_TRIGGER``) must end some key.
- flag: ``--flag`` after a tool on one command line (``tools/*.py``, ``benchmarks/*.py``,
  ``projects/*/*.py``, ``-m iai_d2...``; ``projects/IoULinkBaseline/run.py TOOL.py`` hands its flags to
  ``tools/TOOL.py``) must be an option of that tool's argparse parser, taken by running the tool
  with ``parse_args`` intercepted. A line of flags alone (``--link-iou``, ``# --iters N --quick``)
  must name flags of some tool; other programs' command lines (``tensorboard --logdir``) are theirs.
- ``make TARGET``: a Makefile target. ``iai_d2.x.y`` and ``from iai_d2.x import a, b``: importable.
- link ``[text](target#anchor)``: the target exists, relative to the document, and the anchor is
  one of its headings (GitHub's slugs).
"""

import argparse
import glob
import importlib
import re
import runpy
import sys
from functools import lru_cache
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_PATTERNS = ("README.md", "docs/**/*.md", "projects/*/README.md", "datasets/README.md", "benchmarks/**/README.md")
REPO_DIRS = ("benchmarks", "configs", "datasets", "docs", "iai_d2", "projects", "tests", "tools")
CONFIG_GLOBS = ("configs/**/*.yaml", "projects/*/configs/**/*.yaml")

FENCE = re.compile(r"^[ \t]*(```+|~~~+)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
SPAN = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PATH_TOKEN = re.compile(r"[\w.*{},/-]*/[\w.*{},/-]*")
CONFIG_FILE = re.compile(r"(?<![\w/.-])[\w.-]+\.yaml\b")
KEY = re.compile(r"(?<![\w.])([A-Z][A-Z0-9_]*(?:\.[A-Z][A-Z0-9_]*)+)(\.\*)?(?![\w(])")
TOOL = re.compile(r"(?<![\w/.-])((?:tools|benchmarks|projects/\w+)/[\w/]+\.py|-m\s+iai_d2[\w.]*)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
MAKE = re.compile(r"(?<![\w/.-])make[ \t]+([^\n#;&|]*)")
DOTTED = re.compile(r"(?<![\w./])(iai_d2(?:\.\w+)+)")
FROM_IMPORT = re.compile(r"\bfrom[ \t]+(iai_d2[\w.]*)[ \t]+import[ \t]+\(?([\w \t,]+)")


def doc_files():
    """The documents this test reads, relative to the repository root."""
    found = {p for pattern in DOC_PATTERNS for p in ROOT.glob(pattern) if p.is_file()}
    return sorted(str(p.relative_to(ROOT)) for p in found)


def split_markdown(text):
    """(code texts, prose): fenced blocks and inline spans, and the rest with both removed."""
    blocks = [m.group(2) for m in FENCE.finditer(text)]
    prose = FENCE.sub("", text)
    spans = [m.group(2) for m in SPAN.finditer(prose)]
    return blocks + spans, SPAN.sub("", prose)


def logical_lines(code):
    """Lines of a code text with backslash continuations joined."""
    return code.replace("\\\n", " ").split("\n")


def expand_braces(path):
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    head, tail = path[: match.start()], path[match.end():]
    return [p for alt in match.group(1).split(",") for p in expand_braces(head + alt + tail)]


def path_exists(base, path):
    return all(glob.glob(str(base / p)) if "*" in p else (base / p).exists() for p in expand_braces(path))


def github_slugs(markdown):
    """Anchors of a document's headings, as GitHub makes them (duplicates get -1, -2, ...)."""
    slugs, seen = set(), {}
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*#*$", FENCE.sub("", markdown), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return slugs


class _ParserBuilt(BaseException):
    """Raised instead of parsing: carries the parser a tool built."""

    def __init__(self, parser):
        super().__init__()
        self.parser = parser


@lru_cache(maxsize=None)
def tool_flags(tool):
    """Long options of a tool's argparse parser, or None when the tool builds none (e.g. run.py).

    ``tool`` is a repository path or ``-m module``; the tool runs as ``__main__`` with no arguments
    until it calls ``parse_args``, which raises with the parser instead of parsing.
    """

    if not tool.startswith("-m") and not (ROOT / tool).is_file():
        return None  # reported by the path check

    def capture(parser, *args, **kwargs):
        raise _ParserBuilt(parser)

    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [tool]
    try:
        with mock.patch.object(argparse.ArgumentParser, "parse_args", capture), mock.patch.object(
            argparse.ArgumentParser, "parse_known_args", capture
        ):
            if tool.startswith("-m"):
                module = tool.split()[1]
                sys.modules.pop(module + ".__main__", None)  # imported by another test: run it afresh
                runpy.run_module(module, run_name="__main__")
            else:
                runpy.run_path(str(ROOT / tool), run_name="__main__")
    except _ParserBuilt as built:
        return frozenset(s for action in built.parser._actions for s in action.option_strings if s.startswith("--"))
    except SystemExit:
        return None
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return None


class Index:
    """What exists in the tree: config keys, config files, make targets, tools' flags."""

    def __init__(self):
        sys.path.insert(0, str(ROOT / "projects" / "TrackBaseline"))
        sys.path.insert(0, str(ROOT / "projects" / "Mask2Former"))
        from detectron2.config import CfgNode, get_cfg
        from mask2former import add_mask2former_config
        from track_baseline import add_trackbaseline_config

        cfg = get_cfg()
        add_trackbaseline_config(cfg)
        add_mask2former_config(cfg)
        self.roots = set(cfg.keys())
        self.keys = set()
        stack = [("", cfg)]
        while stack:
            prefix, node = stack.pop()
            for name, value in node.items():
                self.keys.add(prefix + name)
                if isinstance(value, CfgNode):
                    stack.append((prefix + name + ".", value))
        self.config_files = {p.name for pattern in CONFIG_GLOBS for p in ROOT.glob(pattern)}
        makefile = (ROOT / "Makefile").read_text()
        self.make_targets = set(re.findall(r"^([\w.-]+)[ \t]*:(?!=)", makefile, re.M))
        tools = [str(p.relative_to(ROOT)) for d in ("tools", "benchmarks") for p in (ROOT / d).glob("*.py")]
        tools += [str(p.relative_to(ROOT)) for p in ROOT.glob("projects/*/*.py")]
        self.all_flags = set().union(*(tool_flags(t) or () for t in tools))
        self.all_flags |= tool_flags("-m iai_d2.evaluation") or set()

    def key_exists(self, key):
        if key.split(".")[0] in self.roots:
            return key in self.keys
        return any(k.endswith("." + key) for k in self.keys)


def check_paths(code, doc_dir):
    problems = []
    for token in PATH_TOKEN.findall(code):
        path = token.strip(".,:;")
        first = path.split("/")[0]
        if first in REPO_DIRS:
            if first == "datasets" and not path.endswith((".md", ".py")):
                continue
        elif not (first and (doc_dir / first).is_dir() and doc_dir != ROOT):
            continue
        if not (path_exists(ROOT, path) or path_exists(doc_dir, path)):
            problems.append(f"path {path} does not exist")
    return problems


def check_config_names(code, index):
    problems = [f"config file {name} does not exist" for name in CONFIG_FILE.findall(code) if name not in index.config_files]
    for key, _ in KEY.findall(code):
        if not index.key_exists(key):
            problems.append(f"config key {key} does not exist")
    return problems


def check_flags(code, index):
    problems = []
    for line in logical_lines(code):
        tools = list(TOOL.finditer(line))
        if not tools:
            if line.lstrip("#[ \t").startswith("--"):
                problems += [f"flag {f} belongs to no tool" for f in FLAG.findall(line) if f not in index.all_flags]
            continue
        for match, following in zip(tools, tools[1:] + [None]):
            tool = re.sub(r"\s+", " ", match.group(1))
            rest = line[match.end(): following.start() if following else len(line)]
            flags = tool_flags(tool)
            if flags is None:  # a launcher: `run.py TOOL.py ...` passes its arguments to tools/TOOL.py
                named = re.match(r"\s*([\w]+\.py)", rest)
                if not (named and (ROOT / "tools" / named.group(1)).is_file()):
                    continue
                tool, flags = f"tools/{named.group(1)}", tool_flags(f"tools/{named.group(1)}")
            problems += [f"flag {f} is not an option of {tool}" for f in FLAG.findall(rest) if f not in (flags or ())]
    return problems


def check_make_targets(code, index):
    problems = []
    for args in MAKE.findall(code):
        words = [w for w in args.split() if "=" not in w and not w.startswith("-")]
        if words and re.fullmatch(r"[\w.-]+", words[0]) and words[0] not in index.make_targets:
            problems.append(f"make target {words[0]} does not exist")
    return problems


def resolve_python_name(dotted):
    """True when ``a.b.c`` is an importable module or an attribute reached from one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def check_python_names(code):
    names = set(DOTTED.findall(code))
    for module, imported in FROM_IMPORT.findall(code):
        names |= {f"{module}.{n.strip()}" for n in imported.split(",") if n.strip()}
    return [f"python name {n} does not exist" for n in sorted(names) if not resolve_python_name(n)]


def check_links(prose, doc_path):
    problems = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (doc_path.parent / path).resolve() if path else doc_path
        if not file.exists():
            problems.append(f"link {target}: {path} does not exist")
        elif anchor and file.suffix == ".md" and anchor not in github_slugs(file.read_text()):
            problems.append(f"link {target}: no heading #{anchor} in {path or doc_path.name}")
    return problems


def check_markdown(text, doc_path, index):
    """Every problem of one document, one line each (empty: all its names exist)."""
    codes, prose = split_markdown(text)
    doc_dir = doc_path.parent
    problems = []
    for code in codes:
        problems += check_paths(code, doc_dir)
        problems += check_config_names(code, index)
        problems += check_flags(code, index)
        problems += check_make_targets(code, index)
        problems += check_python_names(code)
    return problems + check_links(prose, doc_path)


@pytest.fixture(scope="module")
def index():
    return Index()


@pytest.mark.parametrize("doc", doc_files())
def test_doc_names_only_what_exists(doc, index):
    path = ROOT / doc
    problems = check_markdown(path.read_text(), path, index)
    assert not problems, f"{doc}:\n  " + "\n  ".join(problems)


def test_readme_names_are_found(index):
    """The extraction sees the README's commands: a key, a config, a tool and its flags."""
    codes, _ = split_markdown((ROOT / "README.md").read_text())
    code = "\n".join(codes)
    assert "MODEL.WEIGHTS" in {k for k, _ in KEY.findall(code)}
    assert any(t.strip(".,") == "tools/train_net.py" for t in PATH_TOKEN.findall(code))
    assert {"--config-file", "--eval-only", "--num-gpus"} <= tool_flags("tools/train_net.py")
    assert {"--input", "--output", "--opts"} <= tool_flags("tools/demo_video.py")
    assert {"demo", "test"} <= index.make_targets


@pytest.mark.parametrize(
    "real, renamed, reported",
    [
        ("`MODEL.IAI.NUM_IDS`", "`MODEL.IAI.NUM_IDENTITIES`", "config key MODEL.IAI.NUM_IDENTITIES"),
        ("`MEMORY.NEW_ID_TRIGGER`", "`MEMORY.NEW_ID_TRIGGERS`", "config key MEMORY.NEW_ID_TRIGGERS"),
        ("`iai_tiny.yaml`", "`iai_small.yaml`", "config file iai_small.yaml"),
        ("`tools/demo_video.py`", "`tools/demo.py`", "path tools/demo.py"),
        ("`python tools/train_net.py --eval-only`", "`python tools/train_net.py --evaluate-only`", "flag --evaluate-only"),
        ("`--link-iou`", "`--link-iou-thresh`", "flag --link-iou-thresh belongs to no tool"),
        ("`make demo`", "`make demos`", "make target demos"),
        ("`iai_d2.evaluation.diagnosis.diagnose`", "`iai_d2.evaluation.diagnosis.diagnosis`", "python name"),
        ("[d](docs/DESIGN.md#config-keys)", "[d](docs/DESIGN.md#config-key)", "link docs/DESIGN.md#config-key"),
    ],
)
def test_a_renamed_name_is_reported(real, renamed, reported, index):
    readme = ROOT / "README.md"
    assert check_markdown(real, readme, index) == []
    problems = check_markdown(renamed, readme, index)
    assert len(problems) == 1 and problems[0].startswith(reported), problems


def test_a_key_renamed_in_the_readme_fails_it(index):
    """The real README with one key renamed: exactly that key is reported."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    assert "MODEL.IAI.NUM_IDS" in text
    problems = check_markdown(text.replace("MODEL.IAI.NUM_IDS", "MODEL.IAI.NUM_IDENTITIES"), readme, index)
    assert problems == ["config key MODEL.IAI.NUM_IDENTITIES does not exist"] * text.count("MODEL.IAI.NUM_IDS")
