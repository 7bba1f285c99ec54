"""Checking a composed config against its dataclass schema, reporting every problem in one pass.

OmegaConf stops at the first bad value of a merge, and building the dataclasses stops at the
first one whose ``__post_init__`` refuses its values. So the config is merged into the schema
key by key (a section that does not fit is merged again key by key, so each bad key in it is
named) and built section by section, a list element by element. Every problem lands in one
:class:`Problems`, which raises a single :class:`ConfigError` with a line per problem.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A user-fixable problem in a sweep file or override; the message names the key, one line per problem."""


class Problems:
    """The problems found so far, one line each naming its key; :meth:`raise_if_any` raises them together."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, message: str, prefix: str = "") -> None:
        """Record ``message``, each of its lines a problem (a dataclass reports all its bad fields at once)."""
        for line in message.splitlines():
            if prefix + line not in self.lines:  # e.g. the same grid point refused for every seed
                self.lines.append(prefix + line)

    @contextlib.contextmanager
    def collect(self, prefix: str = "") -> Iterator[None]:
        """Record the OmegaConf error or ValueError (a dataclass's own checks) raised inside the block.

        ``prefix`` goes before each line of a ValueError: the place of a list element, whose
        dataclass names only its bare fields (``conditions[1].`` + ``hue must ...``).
        """
        try:
            yield
        except OmegaConfBaseException as error:
            self.add(describe(error))
        except ValueError as error:
            self.add(str(error), prefix)

    def raise_if_any(self, where: str = "") -> None:
        """Raise one ConfigError: ``where: problem`` for one, a header and an indented line each for several."""
        head = f"{where}: " if where else ""
        if len(self.lines) == 1:
            raise ConfigError(head + self.lines[0])
        if self.lines:
            raise ConfigError(f"{head}{len(self.lines)} problems:\n" + "\n".join(f"  {line}" for line in self.lines))


def describe(error: Exception) -> str:
    """One line naming the bad key, from an OmegaConf/Hydra error."""
    key = getattr(error, "full_key", None)
    message = str(error).splitlines()[0]
    if key:
        return f"bad key {key!r}: {message}"
    return message


def unlock(node: DictConfig | ListConfig) -> None:
    """Clear the read-only flag OmegaConf sets on frozen dataclasses, down the whole schema."""
    node._set_flag("readonly", False)
    children = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in children:
        child = node._get_node(key)
        if isinstance(child, DictConfig | ListConfig):
            unlock(child)
        else:
            child._set_flag("readonly", False)


def merge_each(target: DictConfig, raw: DictConfig, problems: Problems) -> set[str]:
    """Merge ``raw`` into ``target`` (in place) key by key; return the keys that could not be merged at all.

    A mapping that does not fit is merged key by key in turn, so every bad key in it is named
    and its good keys still arrive; a list or a value that does not fit is named whole.
    """
    unmerged = set()
    for key in raw:
        value = raw._get_node(key)  # the node, not its value: interpolations resolve later, against the whole
        try:
            target.merge_with({key: value})
            continue
        except OmegaConfBaseException as error:
            schema = target._get_node(key, validate_access=False)  # None for a key the schema lacks
            if isinstance(value, DictConfig) and isinstance(schema, DictConfig):
                merge_each(target[key], value, problems)
                continue
            named = list(_element_problems(schema, value)) if isinstance(value, ListConfig) else []
            for problem in named or [describe(error)]:
                problems.add(problem)
        unmerged.add(key)
    return unmerged


def _element_problems(schema: DictConfig | ListConfig | None, value: ListConfig) -> Iterator[str]:
    """Each element of ``value`` that does not fit ``schema``'s element type, named by its place in the list.

    OmegaConf names a bad key inside a list element without the element's place (``image_size``
    for ``tasks[0].image_size``), so each element is merged alone and named here.
    """
    if not isinstance(schema, ListConfig):
        return
    for index in range(len(value)):
        element = value._get_node(index)
        try:
            OmegaConf.merge(schema, [element])
        except OmegaConfBaseException as error:
            place = f"{schema._get_full_key(None)}[{index}]"
            inner = getattr(error, "full_key", "")  # relative to a dataclass element; a scalar's is the probe's
            if isinstance(element, DictConfig) and inner:
                place += f".{inner}"
            yield f"bad key {place!r}: {str(error).splitlines()[0]}"


def build_each(merged: DictConfig, keys: Iterable[str], problems: Problems) -> dict[str, Any]:
    """Each of ``keys`` as plain values and dataclasses (whose ``__post_init__`` checks run), by key.

    A list is built element by element, so every bad element is named; a key whose value (or
    any of whose elements) cannot be built is left out.
    """
    built = {}
    for key in keys:
        with problems.collect():
            value = merged[key]  # resolves interpolations; a missing mandatory value raises
            if not isinstance(value, ListConfig):
                built[key] = OmegaConf.to_object(value) if isinstance(value, DictConfig) else value
                continue
            elements = {}
            for index in range(len(value)):
                with problems.collect(prefix=f"{key}[{index}]."):
                    element = value[index]
                    elements[index] = OmegaConf.to_object(element) if isinstance(element, DictConfig) else element
            if len(elements) == len(value):
                built[key] = list(elements.values())
    return built
