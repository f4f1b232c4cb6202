"""Reading recipe YAML within bounds: a text file of bounded size, nesting and expanded size.

A recipe is a few hundred values, so anything far larger is refused before it can cost memory or
time: files over `MAX_BYTES`, nesting deeper than `MAX_DEPTH` (checked while the YAML is composed,
before Python's recursion limit), merge keys (`<<: *name`) that copy more than `MAX_VALUES` keys
in all, and data that expands to more than `MAX_VALUES` values or `MAX_TEXT` characters once each
YAML alias is counted every time it is used ("billion laughs").
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from gankit.core.errors import RecipeError, cut, shown

MAX_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 64
MAX_VALUES = 100_000
MAX_TEXT = MAX_BYTES  # characters of keys and strings, each alias use counted again

# What a scalar that Python cannot convert was meant to be, by its YAML tag.
_KINDS = {"int": "integer", "float": "number", "timestamp": "date"}


class _TooDeep(yaml.MarkedYAMLError):
    """YAML nested deeper than MAX_DEPTH."""


class _TooManyMerged(yaml.MarkedYAMLError):
    """YAML whose merge keys (`<<: *name`) copy more than MAX_VALUES keys in all."""


class _Duplicate(yaml.MarkedYAMLError):
    """A mapping that gives the same key twice."""

    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__(None, None, None, again)
        self.key, self.first = key, first


class _Unconvertible(ConstructorError):
    """A scalar of a known type that Python cannot convert."""


class RecipeLoader(yaml.SafeLoader):
    """YAML 1.2 scalars: only true/false are booleans (`mixed_precision: no` stays a string)
    and `1e-4` is a float without needing a dot. Nesting is bounded by MAX_DEPTH, and a scalar
    Python cannot convert (a date such as 2024-13-45) is a YAML error at its line."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._merged = 0
        self._checked: set[int] = set()  # mappings whose own keys were checked for duplicates

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self._depth >= MAX_DEPTH:
            raise _TooDeep(None, None, None, self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _check_duplicates(self, node: yaml.MappingNode) -> None:
        """Refuse a key written twice in one mapping. Keys merged in with `<<` are not counted:
        the mapping's own keys override them, as YAML intends."""
        if id(node) in self._checked:  # flattened before: merged keys are in its value now
            return
        self._checked.add(id(node))
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue
            key = (key_node.tag, key_node.value)  # as written: constructing it comes later
            if key in seen:
                raise _Duplicate(key_node.value, seen[key], key_node.start_mark)
            seen[key] = key_node.start_mark

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Resolve the merge keys (`<<: *a`, `<<: [*a, *b]`) of `node` as YAML defines them: the
        mapping's own keys win over merged ones, earlier merged mappings over later ones, and
        each key is copied once. PyYAML 6.0.4 deduplicates merged keys by the identity of their
        string objects, so which mapping wins depends on string interning there; resolving them
        here gives the same recipe on every version. Copies are counted, before they are made,
        against MAX_VALUES."""
        self._check_duplicates(node)
        own: list[tuple[yaml.Node, yaml.Node]] = []
        sources: list[tuple[yaml.Node, yaml.MappingNode]] = []
        for key_node, value_node in node.value:
            if key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.tag == "tag:yaml.org,2002:value":  # as PyYAML: '=' is a plain key
                    key_node.tag = "tag:yaml.org,2002:str"
                own.append((key_node, value_node))
                continue
            merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in merged:
                if not isinstance(source, yaml.MappingNode):
                    problem = "expected a mapping or list of mappings for merging, but found"
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"{problem} {source.id}",
                        source.start_mark,
                    )
                sources.append((key_node, source))
        if not sources:
            return
        seen = {_key_identity(key) for key, _ in own}
        copied: list[tuple[yaml.Node, yaml.Node]] = []
        for merge_key, source in sources:
            self.flatten_mapping(source)  # a mapping merged again is already flat: no new work
            self._merged += len(source.value)
            if self._merged > MAX_VALUES:
                raise _TooManyMerged(None, None, None, merge_key.start_mark)
            for key, value in source.value:
                identity = _key_identity(key)
                if identity is None or identity not in seen:
                    seen.add(identity)
                    copied.append((key, value))
        node.value = copied + own

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as error:
            tag = node.tag.rsplit(":", 1)[-1]
            reason = str(error).split(";")[0]
            problem = f"this {_KINDS.get(tag, tag)} cannot be read ({reason})"
            raise _Unconvertible(None, None, problem, node.start_mark) from None


def _key_identity(key: yaml.Node) -> tuple[str, str] | None:
    """What makes two mapping keys the same key for a merge: a scalar's tag and text (None for
    a collection used as a key, which is never merged away)."""
    return (key.tag, key.value) if isinstance(key, yaml.ScalarNode) else None


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if not tag.endswith((":bool", ":float"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _too_deep(source: str, where: str) -> RecipeError:
    return RecipeError(
        f"{source} nests deeper than {MAX_DEPTH} levels{where}; a recipe needs a few "
        "(section, key, value): look for unclosed brackets or a runaway structure there"
    )


def _load(text: str, source: str) -> Any:
    """yaml.load with the recipe loader; nesting past the bound is a RecipeError."""
    try:
        return yaml.load(text, Loader=RecipeLoader)
    except _TooDeep as error:
        raise _too_deep(source, _at(error.problem_mark)) from None
    except _TooManyMerged as error:
        raise RecipeError(
            f"{source} merges more than {MAX_VALUES:,} keys with '<<'{_at(error.problem_mark)}, "
            "counting a mapping again each time it is merged; a recipe needs a few: merge "
            "fewer or smaller mappings"
        ) from None
    except _Duplicate as error:
        raise RecipeError(
            f"{source}: key {shown(error.key, 40)} at line {error.problem_mark.line + 1} is given "
            f"twice (first at line {error.first.line + 1}); keep one of them"
        ) from None
    except RecursionError:
        raise _too_deep(source, "") from None


def _at(mark: yaml.Mark) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}"


def _problem(error: yaml.YAMLError, text: str) -> str:
    """Where and what a YAML error is: " at line 3, column 5: <problem>"."""
    if isinstance(error, yaml.reader.ReaderError):
        line = text.count("\n", 0, error.position) + 1
        return (
            f" at line {line}: the control character #x{error.character:04x} is not allowed "
            "in YAML text"
        )
    mark = getattr(error, "problem_mark", None)
    where = _at(mark) if mark else ""
    return f"{where}: {cut(str(getattr(error, 'problem', None) or error), 200)}"


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text with the recipe loader, within the nesting bound; `source` names it in
    errors ("recipe 'x.yaml'")."""
    try:
        return _load(text, source)
    except yaml.YAMLError as error:
        syntax = isinstance(error, yaml.scanner.ScannerError | yaml.parser.ParserError)
        advice = (
            ". Fix the syntax there (indentation, a missing ':' or an unclosed bracket are the "
            "usual causes)."
            if syntax
            else "; correct it, or quote it to make it a string."
            if isinstance(error, _Unconvertible)
            else "; remove it."
            if isinstance(error, yaml.reader.ReaderError)
            else "; correct it there."
        )
        raise RecipeError(f"{source} is not valid YAML{_problem(error, text)}{advice}") from None


def check_bounds(data: Any, source: str, at: str = "") -> None:
    """Refuse data nested deeper than MAX_DEPTH, or holding more than MAX_VALUES values or
    MAX_TEXT characters, counting what a shared (aliased) value holds each time it is reached;
    also refuse NUL characters in keys and strings. Stops as soon as a bound is passed. `at`:
    where `data` sits in the recipe, for the messages."""
    # Each entry: (value, its depth, (parent's trail, key)): a linked trail, read on error.
    pending: list[tuple[Any, int, tuple[Any, Any] | None]] = [(data, 1, None)]
    values, text = 1, 0
    while pending:
        item, depth, trail = pending.pop()
        children: Iterable[tuple[Any, Any]] | None = None
        if isinstance(item, dict):
            texts = [key for key in item if isinstance(key, str | bytes)]
            children = item.items()
        elif isinstance(item, list | tuple | set | frozenset):
            texts, children = [], enumerate(item)
        else:
            texts = [item] if isinstance(item, str | bytes) else []
        for piece in texts:
            text += len(piece)
            if (b"\0" if isinstance(piece, bytes) else "\0") in piece:
                what = f"the key {shown(piece)} in" if piece is not item else "the value at"
                raise RecipeError(
                    f"{source}: {what} {_key_path(trail, at)} contains a NUL character (\\0), "
                    "which no name or path may hold; remove it"
                )
        if text > MAX_TEXT:
            raise RecipeError(
                f"{source} holds more than {MAX_TEXT:,} characters of text (at "
                f"{_key_path(trail, at)}), counting a YAML alias (*name) again each time it is "
                "used; a recipe needs far less: use fewer aliases or shorter values"
            )
        if children is None or not item:
            continue
        if depth >= MAX_DEPTH:
            raise _too_deep(source, f" at {_key_path(trail, at)}")
        values += len(item)
        if values > MAX_VALUES:
            raise RecipeError(
                f"{source} holds more than {MAX_VALUES:,} values (at {_key_path(trail, at)}), "
                "counting a YAML alias (*name) again each time it is used; a recipe needs a few "
                "hundred: use fewer aliases or smaller anchored values"
            )
        pending.extend((child, depth + 1, (trail, key)) for key, child in children)


def _key_path(trail: tuple[Any, Any] | None, at: str) -> str:
    """The dotted key path of a trail below `at` (`train.steps`, `wandb.tags[3]`)."""
    keys: list[Any] = []
    while trail is not None:
        trail, key = trail
        keys.append(key)
    path = cut(at)
    for key in reversed(keys):
        path += f"[{key}]" if isinstance(key, int) else f".{cut(str(key), 40)}"
    return path.lstrip(".") or "the top level"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes: a regular file of at most MAX_BYTES, else a RecipeError."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        names = shipped_recipes()
        hint = f" Recipes shipped with gankit, by name: {', '.join(names)}." if names else ""
        raise RecipeError(
            f"recipe file '{path}' not found (looked at {path.resolve()}).{hint}"
        ) from None
    except OSError as error:
        raise _unreadable(path, error) from None
    if stat.S_ISDIR(info.st_mode):
        try:
            inside = sorted(p.name for p in path.glob("*.y*ml"))[:3]
        except OSError:
            inside = []
        example = f" such as {path / inside[0]}" if inside else ""
        raise RecipeError(
            f"recipe '{path}' is a folder, not a file; give a recipe YAML file{example}"
        )
    if not stat.S_ISREG(info.st_mode):
        kind = (
            "a named pipe (FIFO)"
            if stat.S_ISFIFO(info.st_mode)
            else "a socket"
            if stat.S_ISSOCK(info.st_mode)
            else "a device"
        )
        raise RecipeError(f"recipe '{path}' is {kind}, not a regular file; give a YAML file")
    if info.st_size > MAX_BYTES:
        raise _too_large(path, info.st_size)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as error:
        raise _unreadable(path, error) from None
    if len(data) > MAX_BYTES:
        raise _too_large(path, None)
    return data


def _unreadable(path: Path, error: OSError) -> RecipeError:
    reason = error.strerror or type(error).__name__
    return RecipeError(
        f"cannot read recipe file '{path}': {reason}; check that it is a readable file "
        "(its permissions, and those of its folders)"
    )


def _too_large(path: Path, size: int | None) -> RecipeError:
    actual = f"{size:,} bytes" if size else "larger than that"
    return RecipeError(
        f"recipe file '{path}' is {actual}; recipes are at most {MAX_BYTES:,} bytes (1 MiB). "
        "Check that this is the recipe you meant"
    )


def _decode(path: Path, data: bytes) -> str:
    """The file's text, refusing binary files and encodings other than UTF-8."""
    if b"\0" in data:
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise RecipeError(
            f"recipe file '{path}' is not a UTF-8 text recipe: it contains NUL bytes (from line "
            f"{line}), so it is binary or saved as UTF-16/32; give a YAML file saved as UTF-8"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise RecipeError(
            f"recipe file '{path}' is not a UTF-8 text recipe: byte 0x{data[error.start]:02x} "
            f"at line {line} is not UTF-8 (a Latin-1 or Windows-1252 file, or binary); save "
            "it as UTF-8"
        ) from None


SHIPPED_RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def shipped_recipes() -> list[str]:
    """The names of the recipes that ship inside the package (`mnist_dcgan`, ...)."""
    try:
        return sorted(p.stem for p in SHIPPED_RECIPES.glob("*.yaml"))
    except OSError:
        return []


def find_recipe(path: str | Path) -> Path:
    """The recipe file `path` names: a file path as given, else, for a bare name such as
    `mnist_dcgan` (or `mnist_dcgan.yaml`) that is not a file here, the recipe of that name
    shipped inside the package. A path that exists always wins over a shipped name."""
    given = Path(path)
    if given.exists() or len(given.parts) != 1:
        return given
    name = given.name.removesuffix(".yaml").removesuffix(".yml")
    shipped = SHIPPED_RECIPES / f"{name}.yaml"
    return shipped if shipped.is_file() else given


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """Read a recipe's YAML into a dict, with errors that name the file, line and column."""
    path = find_recipe(path)
    source = f"recipe '{path}'"
    raw = parse_yaml(_decode(path, _read_bytes(path)), source)
    if raw is None:
        raise RecipeError(f"{source} is empty; start from recipes/mnist_dcgan.yaml")
    if not isinstance(raw, dict):
        raise RecipeError(
            f"{source} must be a mapping of sections, got {type(raw).__name__} ({shown(raw)}); "
            "write it as 'section: ...' lines, as in recipes/mnist_dcgan.yaml"
        )
    check_bounds(raw, source)
    return raw


def parse_override_value(text: str, override: str, key: str) -> Any:
    """An override's value (`steps=100` -> 100), parsed as YAML within the recipe bounds; an
    empty one is refused rather than read as null."""
    source = f"override {shown(override)}"
    if not text.strip():
        raise RecipeError(
            f"{source} gives no value after '='; give one ({cut(key)}=null unsets the key)"
        )
    try:
        value = _load(text, source)
    except yaml.YAMLError as error:
        raise RecipeError(
            f"{source}: cannot parse {shown(text)} as a value{_problem(error, text)}; quote a "
            "value meant as text (key='\"...\"')"
        ) from None
    check_bounds(value, source, key)
    return value
