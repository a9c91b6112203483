"""Rules by name: ``step_rule="lfcache"`` finds its class and its options dataclass here.

A new rule is one file that defines the rule, its options dataclass (frozen, every field with
a default, validated in ``__post_init__``) and its state, and registers them::

    @register_step_rule("toy", options=ToyOptions)
    class Toy: ...

The config routes each flat option name (``alpha=0.6``) to the options dataclass of the rule
that declares that field, so option names must be unique enough to say whose they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

KINDS = ("step", "block")


@dataclass(frozen=True)
class RuleEntry:
    name: str
    kind: str  # "step" or "block"
    cls: type
    options: type  # a frozen dataclass

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.options))


_rules: dict[str, dict[str, RuleEntry]] = {kind: {} for kind in KINDS}
_reserved: set[str] = set()  # the config's own field names: no rule option may take one


def _register(kind: str, name: str, cls, options):
    def add(cls):
        if not isinstance(name, str) or not name or name == "none":
            raise ValueError(f"a {kind} rule needs a name other than 'none', got {name!r}")
        if not (dataclasses.is_dataclass(options) and isinstance(options, type)
                and options.__dataclass_params__.frozen):
            raise TypeError(f"the options of {kind} rule {name!r} must be a frozen dataclass")
        missing = [f.name for f in dataclasses.fields(options)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise TypeError(f"options of {kind} rule {name!r} need defaults: {', '.join(missing)}")
        taken = sorted(_reserved & {f.name for f in dataclasses.fields(options)})
        if taken:
            raise ValueError(f"{kind} rule {name!r}: option names {taken} are config fields")
        other = [k for k in KINDS if k != kind and name in _rules[k]]
        if other:
            raise ValueError(f"a {other[0]} rule is already named {name!r}")
        old = _rules[kind].get(name)
        if old is not None and (old.cls.__module__, old.cls.__qualname__) != (
                cls.__module__, cls.__qualname__):
            raise ValueError(f"a {kind} rule named {name!r} is already registered "
                             f"({old.cls.__module__}.{old.cls.__qualname__})")
        _rules[kind][name] = RuleEntry(name, kind, cls, options)
        return cls

    return add if cls is None else add(cls)


def register_step_rule(name: str, cls=None, *, options):
    """Register a step rule under ``name`` (usable as a decorator when ``cls`` is omitted)."""
    return _register("step", name, cls, options)


def register_block_rule(name: str, cls=None, *, options):
    """Register a block rule under ``name`` (usable as a decorator when ``cls`` is omitted)."""
    return _register("block", name, cls, options)


def rule_names(kind: str) -> tuple[str, ...]:
    """The registered rules of ``kind``, in the order they were registered."""
    return tuple(_rules[kind])


def lookup(kind: str, name: str) -> RuleEntry:
    return _rules[kind][name]


def entries() -> list[RuleEntry]:
    return [entry for kind in KINDS for entry in _rules[kind].values()]


def owners(option: str) -> list[RuleEntry]:
    """The registered rules whose options declare ``option``."""
    return [entry for entry in entries() if option in entry.option_names]


def option_names() -> list[str]:
    """Every registered rule's option names, each once, in registration order."""
    names: dict[str, None] = {}
    for entry in entries():
        names.update(dict.fromkeys(entry.option_names))
    return list(names)


def reserve(names) -> None:
    """Forbid ``names`` (the config's own fields) as rule option names."""
    clash = sorted({n for entry in entries() for n in entry.option_names} & set(names))
    if clash:
        raise ValueError(f"rule options {clash} clash with config fields")
    _reserved.update(names)
