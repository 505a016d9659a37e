"""Planner options, each defined once: a dataclass field carries its default, help and flag.

    @dataclass(frozen=True, kw_only=True)
    class SLO:
        ttft_s: float | None = option(None, "TTFT target, seconds", flag="--ttft-slo")

Everything else is derived from those fields, so a new option is one new field:

    command line   add_option_groups(parser, (Workload, SLO, ...)): one argparse group per
                   dataclass; --workload FILE first
    workload file  TOML whose keys are the flags without their dashes (`ttft_slo` or
                   `ttft-slo`); tables only group them, their names are ignored
    values         option_values(args, groups): the file's values, then the flags given on
                   the command line over them (an option of an exclusive group, such as
                   --profile | --gpu, given as a flag replaces the file's whole group)
    dataclasses    build(Workload, values): keyword construction; a required option that is
                   missing is one RidgelineError naming its flag
    docs           options_markdown(groups): the table in docs/planning.md (a test keeps the
                   two equal)

A field typed `tuple[float, ...] | None` is a list option: `--rps 2 4 8` (numbers may also
be given comma-separated, `--rps 2,4,8`), a TOML list (or a "2,4,8" string) in a workload
file, a tuple on the dataclass.

Validation stays in each dataclass's __post_init__, so a Python caller gets the same
errors as the command line. `ridgeline plan` and `ridgeline simulate` share the groups.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
import typing
from dataclasses import MISSING, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

from ridgeline.errors import RidgelineError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_META = "ridgeline.option"
WORKLOAD_DEST = "workload"


@dataclass(frozen=True)
class _Meta:
    help: str
    flag: str | None
    exclusive: str | None
    metavar: str | None


def option(default: Any = MISSING, help: str = "", *, flag: str | None = None,
           exclusive: str | None = None, metavar: str | None = None) -> Any:
    """A dataclass field that is also a planner option (no default: required).

    `flag` defaults to --<field name with dashes>; options sharing an `exclusive` name
    are alternatives (one given as a flag replaces the others from the workload file).
    """
    return dataclasses.field(default=default,
                             metadata={_META: _Meta(help, flag, exclusive, metavar)})


def option_like(cls: type, name: str, default: Any = MISSING, *, suffix: str = "") -> Any:
    """A field that is the option `name` of `cls` again (same flag, help and metavar), with its
    own default: one definition shared by two groups that may not both be in one command
    (simulate's --input-p95 is Workload's, optional there because a trace can give lengths)."""
    meta = next(f.metadata[_META] for f in dataclasses.fields(cls) if f.name == name)
    return option(default, meta.help + suffix, flag=meta.flag, exclusive=meta.exclusive,
                  metavar=meta.metavar)


@dataclass(frozen=True)
class Option:
    """One option as every consumer sees it."""

    owner: type
    name: str            # dataclass field
    flag: str            # --ttft-slo
    key: str             # ttft_slo: argparse dest and workload-file key
    type: type           # int, float, str or bool
    default: Any         # MISSING when required
    help: str
    exclusive: str | None
    metavar: str | None
    many: bool = False   # a list option: type is the element type, the value a tuple

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def default_text(self) -> str:
        if self.required:
            return "required"
        if self.default is None:
            return "-"
        if self.type is bool:
            return "on" if self.default else "off"
        if self.many:
            return " ".join(str(v) for v in self.default)
        return str(self.default)


def _scalar(hint: Any) -> tuple[type, bool]:
    """int | None -> (int, False); tuple[float, ...] | None -> (float, True): the scalar type
    of an option's value (of each element, for a list option) and whether it is a list."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"an option has one scalar type, not {hint}")
        hint = args[0]
    many = False
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"a list option is tuple[T, ...], not {hint}")
        hint, many = args[0], True
    if hint not in (int, float, str, bool) or (many and hint is bool):
        raise TypeError(f"option type {hint} is not int, float, str or bool")
    return hint, many


@lru_cache(maxsize=None)
def options_of(cls: type) -> tuple[Option, ...]:
    """The options of a dataclass, in field order (fields without option() are not options)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_META)
        if meta is None:
            continue
        flag = meta.flag or "--" + f.name.replace("_", "-")
        typ, many = _scalar(hints[f.name])
        out.append(Option(cls, f.name, flag, flag.lstrip("-").replace("-", "_"), typ,
                          f.default, meta.help, meta.exclusive, meta.metavar, many))
    return tuple(out)


def group_title(cls: type) -> str:
    """The first line of a group's docstring, without its full stop."""
    return (cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip(".")


def _all(groups: Iterable[type]) -> list[Option]:
    opts = [o for g in groups for o in options_of(g)]
    seen: dict[str, Option] = {}
    for o in opts:
        if o.key in seen:
            raise TypeError(f"option {o.flag} is defined twice ({seen[o.key].owner.__name__} and "
                            f"{o.owner.__name__})")
        seen[o.key] = o
    return opts


def flag_of(cls: type, name: str) -> str:
    """The flag of field `name` of `cls` (for messages that name what the user typed)."""
    for o in options_of(cls):
        if o.name == name:
            return o.flag
    raise KeyError(f"{cls.__name__}.{name} is not an option")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# rule -> predicate; the rule is also the message ("--tp must be a positive whole number")
RULES = {
    "a positive whole number": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "a whole number >= 0": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "a positive number": lambda v: _number(v) and v > 0,
    ">= 0": lambda v: _number(v) and v >= 0,
    ">= 1": lambda v: _number(v) and v >= 1,
    "in (0, 1]": lambda v: _number(v) and 0 < v <= 1,
}


def check(obj: Any, rule: str, *names: str) -> None:
    """RidgelineError naming the flag when a field of `obj` breaks `rule` (None: not given)."""
    ok = RULES[rule]
    for name in names:
        v = getattr(obj, name)
        if v is not None and not ok(v):
            raise RidgelineError(f"{flag_of(type(obj), name)} must be {rule}, got {v!r}")


# -- command line ---------------------------------------------------------------------------

def add_option_groups(parser: argparse.ArgumentParser, groups: Sequence[type]) -> None:
    """--workload FILE, then one argparse group per dataclass of `groups`.

    Every flag defaults to None, so option_values can tell a flag given from one left out.
    """
    _all(groups)  # fails early on a key defined twice
    parser.add_argument("--workload", dest=WORKLOAD_DEST, metavar="FILE",
                        help="TOML file of any of the options below, keys = the flags without "
                             "their dashes (flags given here override it)")
    for cls in groups:
        group = parser.add_argument_group(group_title(cls))
        for o in options_of(cls):
            text = o.help.replace("%", "%%")
            if o.type is bool:
                group.add_argument(o.flag, dest=o.key, action="store_true", default=None,
                                   help=text)
                continue
            shown = "" if o.default in (None, MISSING) else f" (default: {o.default_text()})"
            if o.many:  # tokens are checked in option_values: a bad one is one line
                group.add_argument(o.flag, dest=o.key, nargs="+", default=None,
                                   metavar=o.metavar or o.key.upper(), help=text + shown)
                continue
            group.add_argument(o.flag, dest=o.key, type=o.type, default=None,
                               metavar=o.metavar or o.key.upper(), help=text + shown)


def option_values(args: argparse.Namespace, groups: Sequence[type]) -> dict[str, Any]:
    """{key: value}: the workload file (if --workload), then the flags given over it."""
    opts = _all(groups)
    path = getattr(args, WORKLOAD_DEST, None)
    values = read_workload_file(path, groups) if path else {}
    given = {o.key: getattr(args, o.key) for o in opts if getattr(args, o.key, None) is not None}
    for o in opts:
        if o.many and o.key in given:
            given[o.key] = _list(o.flag, given[o.key], o.type)
    # a flag of an exclusive group replaces the file's alternatives (--profile over gpu = ...)
    for group in {o.exclusive for o in opts if o.exclusive and o.key in given}:
        for o in opts:
            if o.exclusive == group and o.key not in given:
                values.pop(o.key, None)
    values.update(given)
    return values


def build(cls: type, values: dict[str, Any]) -> Any:
    """The dataclass `cls` from option values (keyword construction; absent -> the default)."""
    kwargs = {}
    for o in options_of(cls):
        if o.key in values and values[o.key] is not None:
            kwargs[o.name] = values[o.key]
        elif o.required:
            raise RidgelineError(f"{o.flag} is required ({o.help})")
    return cls(**kwargs)


def given(values: dict[str, Any], cls: type) -> bool:
    """Whether any option of `cls` has a value (a mode such as --static-batch is chosen)."""
    return any(values.get(o.key) is not None for o in options_of(cls))


# -- workload file ---------------------------------------------------------------------------

def read_workload_file(path: str | Path, groups: Sequence[type]) -> dict[str, Any]:
    """{key: value} from a TOML workload file; RidgelineError on unknown keys or wrong types."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RidgelineError(f"workload file not found: {path}") from None
    except OSError as exc:
        raise RidgelineError(f"cannot read workload file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RidgelineError(f"{path} is not valid TOML: {exc}") from None
    known = {o.key: o for o in _all(groups)}
    out: dict[str, Any] = {}

    def walk(table: dict[str, Any], where: str) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value, f"{where}{key}.")
                continue
            name = key.strip().replace("-", "_")
            if name not in known:
                raise RidgelineError(f"{path}: unknown key {where}{key!r} (keys are the option "
                                     "flags without their dashes, e.g. input_p95, ttft_slo)")
            if name in out:
                raise RidgelineError(f"{path}: {key!r} is given twice")
            out[name] = _coerce(path, name, value, known[name].type, known[name].many)

    walk(data, "")
    return out


def _element(part: Any, typ: type) -> Any:
    """One element of a list option as `typ`; ValueError when it is not one."""
    if isinstance(part, bool):
        raise ValueError
    if typ is str:
        if not isinstance(part, str):
            raise ValueError
        return part
    if isinstance(part, str):
        return typ(part.strip())
    if typ is int and isinstance(part, float) and part.is_integer():
        return int(part)
    if not isinstance(part, typ if typ is int else (int, float)):
        raise ValueError
    return typ(part)


def _list(where: str, tokens: Any, typ: type) -> tuple:
    """A list option's value as a tuple of `typ`: tokens from the command line or a TOML list
    (numbers may be comma-separated: "2,4,8"); RidgelineError naming `where` otherwise."""
    if not isinstance(tokens, (list, tuple)):
        tokens = [tokens]
    out: list[Any] = []
    for tok in tokens:
        parts = tok.split(",") if isinstance(tok, str) and typ is not str else [tok]
        for part in parts:
            if isinstance(part, str) and not part.strip():
                continue
            try:
                out.append(_element(part, typ))
            except (TypeError, ValueError):
                what = {int: "whole numbers", float: "numbers", str: "strings"}[typ]
                raise RidgelineError(f"{where} takes {what}, got {part!r}") from None
    if not out:
        raise RidgelineError(f"{where} needs at least one value")
    return tuple(out)


def _coerce(path: Path, key: str, v: Any, typ: type, many: bool = False) -> Any:
    """A TOML value as the option's type (TOML's 2 for a float option is fine)."""
    if many:
        return _list(f"{path}: {key}", v, typ)
    if typ is bool:
        if not isinstance(v, bool):
            raise RidgelineError(f"{path}: {key} must be true or false, got {v!r}")
        return v
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if typ is int and isinstance(v, float) and v.is_integer():
        return int(v)
    if not isinstance(v, typ) or isinstance(v, bool):
        what = {int: "a whole number", float: "a number", str: "a string"}[typ]
        raise RidgelineError(f"{path}: {key} must be {what}, got {v!r}")
    return v


# -- docs ------------------------------------------------------------------------------------

def options_markdown(groups: Sequence[type]) -> str:
    """The options table of docs/planning.md: group, flag (= file key), default, meaning."""
    rows = ["| group | flag | default | meaning |", "|---|---|---|---|"]
    for cls in groups:
        for i, o in enumerate(options_of(cls)):
            rows.append(f"| {group_title(cls) if i == 0 else ''} | `{o.flag}` | "
                        f"{o.default_text()} | {o.help.replace('|', '/')} |")
    return "\n".join(rows)
