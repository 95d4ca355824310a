"""The documentation: a short README that starts with the two copy-paste commands, a site (docs/, built
by MkDocs) whose links and pictures all exist, and a Configs page that describes every key of the schema.

`mkdocs build --strict` (in .ci/run) checks the site's links and anchors too; these tests need no MkDocs.
"""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from conftest import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 250

# The README's first two code blocks, exactly: CI and people on a fresh machine copy them.
FRESH_MACHINE = ("python3 -m venv .venv && .venv/bin/pip install -e . && MNISTLAB_DATA_DIR=../shared/data "
                 ".venv/bin/mnistlab train configs/iter5.yaml")
TEST_SUITE = ('python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e ".[test]" && MNISTLAB_DATA_DIR=../shared/data '
              ".venv/bin/python -m pytest -q")
COMMANDS_WITHIN = 15  # lines: the two commands come before anything else a reader has to scroll past


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def code_blocks(text: str) -> list[tuple[int, int, list[str]]]:
    """Fenced code blocks: (first line, closing line, the lines between), 1-based."""
    blocks, start, body = [], None, []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            if start is None:
                start, body = number, []
            else:
                blocks.append((start, number, body))
                start = None
        elif start is not None:
            body.append(line)
    return blocks


def prose(text: str) -> str:
    """The text without fenced code blocks, inline code and HTML comments (links there are not links)."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(lines)


def relative_targets(text: str) -> list[str]:
    """Every link and image target of a Markdown text that is a file of this repository."""
    found = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose(text))
    found += re.findall(r"<img[^>]*\ssrc=\"([^\"]+)\"", prose(text))
    found += re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", prose(text), flags=re.M)  # reference-style definitions
    targets = []
    for target in found:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I) or target.startswith("#"):
            continue  # http:, https:, mailto:, or a place on the same page
        targets.append(target.split("#", 1)[0].split("?", 1)[0])
    return targets


# ---------------------------------------------------------------- the README

def test_the_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; at most {README_MAX_LINES}: move the details to a page in docs/")


def test_the_readme_starts_with_the_two_copy_paste_commands():
    text = README.read_text(encoding="utf-8")
    blocks = code_blocks(text)
    assert len(blocks) >= 2, "README.md should start with two code blocks: install+train, install+test"
    (start1, _, first), (_, end2, second) = blocks[0], blocks[1]
    assert first == [FRESH_MACHINE], f"the README's first code block (line {start1}) changed: {first}"
    assert second == [TEST_SUITE], f"the README's second code block changed: {second}"
    assert end2 <= COMMANDS_WITHIN, f"the two commands should end by line {COMMANDS_WITHIN}, not {end2}"
    assert text.startswith("# mnistlab\n")


@pytest.mark.parametrize("path", [README, *pages()], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_picture_exists(path):
    missing = [t for t in relative_targets(path.read_text(encoding="utf-8"))
               if not (path.parent / t).exists()]
    assert missing == [], f"{path.relative_to(REPO)} links to files that do not exist: {missing}"


def test_the_link_check_sees_links():
    text = ("See [a](docs/a.md#x), ![b](img/b.png \"title\"), [c](https://x.org), [d](#here),\n"
            "`[not](a link)`, <img src=\"e.png\">\n```\n[nor](this)\n```\n[f]: ../f.md\n<!-- [g](g.md) -->\n")
    assert relative_targets(text) == ["docs/a.md", "img/b.png", "e.png", "../f.md"]


def test_the_pages_point_nowhere_outside_the_project():
    """Users have only the repository: no page sends them to the folders beside it (the README's opening
    commands are the one exception: a fresh machine of this project has its datasets there)."""
    readme_after_commands = "\n".join(README.read_text(encoding="utf-8").splitlines()[COMMANDS_WITHIN:])
    for name, text in [("README.md (after the commands)", readme_after_commands),
                       *((str(p.relative_to(REPO)), p.read_text(encoding="utf-8")) for p in pages())]:
        mentions = text.count("../shared")
        assert mentions == 0, f"{name} mentions ../shared {mentions} time(s); say $MNISTLAB_DATA_DIR or --data-dir"


# ---------------------------------------------------------------- the site

def nav_files(entries) -> list[str]:
    files = []
    for entry in entries:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            files += nav_files(value) if isinstance(value, list) else [value]
    return files


def test_every_page_is_in_the_navigation_and_every_picture_is_used():
    nav = nav_files(yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    assert sorted(nav) == sorted(p.name for p in pages()), "mkdocs.yml's nav and docs/*.md differ"
    used = "\n".join(p.read_text(encoding="utf-8") for p in [README, *pages()])
    unused = [p.name for p in sorted((DOCS / "img").glob("*")) if p.name not in used]
    assert unused == [], f"pictures no page shows: {unused}"


def test_pictures_are_small_pngs():
    pictures = sorted((DOCS / "img").glob("*"))
    assert pictures, "docs/img/ holds the plots and the draw window"
    for picture in pictures:
        assert picture.suffix == ".png" and picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture.name
        assert picture.stat().st_size < 150_000, f"{picture.name}: {picture.stat().st_size:,} bytes; downscale it"


# ---------------------------------------------------------------- every config key on the Configs page

def model_classes(annotation) -> list[type[BaseModel]]:
    """The sections a key's value can be: its pydantic classes, when the value can only be a section
    (data.normalize may be a name or {mean, std}: a value, not a section with keys of its own)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    found = [c for a in args for c in model_classes(a)]
    return found if found and len(found) == len(args) else []


def schema_keys(cls=None, prefix: str = "") -> list[str]:
    """Every dotted key a config can set, from the schema in mnistlab/config.py (the keys of all the
    optimizers and schedulers together, as they share their section)."""
    from mnistlab.config import ExperimentConfig

    keys: list[str] = []
    for name, field in (cls or ExperimentConfig).model_fields.items():
        key = prefix + name
        keys.append(key)
        for section in model_classes(field.annotation):
            keys += [k for k in schema_keys(section, key + ".") if k not in keys]
    return keys


def documented_keys() -> list[str]:
    text = (DOCS / "configs.md").read_text(encoding="utf-8")
    reference = text.split("## Every key", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_.]+)` \|", reference, flags=re.M)


def test_the_schema_walk_finds_every_kind_of_key():
    keys = schema_keys()
    assert {"seed", "data.augment.center_crop.p", "train.optimizer.momentum", "train.scheduler.t_max",
            "train.early_stopping.patience", "model.name"} <= set(keys)
    assert "data.normalize.mean" not in keys


def test_the_configs_page_describes_every_key():
    keys, documented = schema_keys(), documented_keys()
    missing = [k for k in keys if k not in documented]
    assert missing == [], f"docs/configs.md does not describe these config keys: {missing}"
    stale = [k for k in documented if k not in keys]
    assert stale == [], f"docs/configs.md describes keys the schema does not have: {stale}"


def test_the_checkpoint_page_rebuilds_the_shipped_model_with_torch_alone():
    """docs/checkpoints.md's example runs as written (from the repository root) and reads its drawn 1."""
    text = (DOCS / "checkpoints.md").read_text(encoding="utf-8")
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert "mnistlab" not in block.replace("mnistlab/reading/weights/default.pt", "")  # torch alone
    result = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def test_models_layers_prints_each_models_exact_layers(cli):
    code, out, _ = cli("models", "cnn3_bn", "--layers")
    assert code == 0 and out.startswith("cnn3_bn (") and "Conv2d(1, 32, kernel_size=(3, 3)" in out
    assert "padding=(1, 1)" in out and "Linear(in_features=1152, out_features=128" in out
