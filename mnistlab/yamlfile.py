"""YAML as users hand it in (configs, sweep files, --set values), read defensively.

PyYAML's safe loader already refuses Python objects. On top of it: a file must be a regular file of
at most MAX_BYTES; a key may appear once per mapping (PyYAML keeps the last silently); a stream
holds one document; and what aliases expand to is bounded, because `&a [*b, *b, ...]` chains
build a few hundred bytes into billions of values that every later walk (validation, copying,
printing) would visit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

from .errors import UserError, one_line

MAX_BYTES = 1 << 20  # a config is a few hundred bytes; a megabyte is already absurd
MAX_VALUES = 100_000  # values after alias expansion, counted with repeats


class DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool, type(None))) and key in seen:
                    raise DuplicateKey(None, None, f"the key {key!r} is given twice", key_node.start_mark)
                seen.add(key if isinstance(key, (str, int, float, bool, type(None))) else id(key))
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)


def parse_yaml(text: str, where: str):
    """One YAML document, checked as above; `where` names it in errors (a path, or `--set KEY`)."""
    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506  (_Loader is a SafeLoader)
    except yaml.YAMLError as exc:
        raise UserError(yaml_error(exc, where)) from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply") from None
    check_expansion(value, where)
    return value


def yaml_error(exc: yaml.YAMLError, where: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    place = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if "another document" in problem or "expected a single document" in problem:
        return f"{place}: holds several YAML documents ('---'); give one"
    if isinstance(exc, DuplicateKey):
        return f"{place}: {problem}; give each key once"
    return f"{place}: YAML syntax error: {one_line(problem, 120)}"


def check_expansion(value, where: str) -> None:
    """Refuse values that expand (through aliases, or a self-reference) past MAX_VALUES."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise UserError(f"{where}: expands to more than {MAX_VALUES:,} values (YAML aliases?); "
                            f"a config is far smaller")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def read_yaml_file(path: str | Path, what: str = "config"):
    """The parsed document of a YAML file; every way the file can be wrong is one UserError."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UserError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{what} path is a directory, not a YAML file: {path}")
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{what} {path} is not a regular file (a pipe or a device?)")
    if info.st_size > MAX_BYTES:
        raise UserError(f"{what} {path} is {info.st_size / 1e6:.1f} MB; a {what} is at most "
                        f"{MAX_BYTES // 1024} KB")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
        text = data.decode("utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text") from None
    return parse_yaml(text, os.fspath(path))
