"""Readers over pycep's JSON trees of infra/*.bicep, shared by the infra tests.

pycep writes a reference to a parameter or variable as a bare string, like a literal; ``resolve`` looks such a
string up in the file's variables, so a declared name reads the same whether it is written inline or in a var.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

Templates = dict[str, Any]  # path under infra/ ("modules/storage.bicep") -> pycep tree
Mutation = tuple[str, str, str]  # (path under infra/, text, replacement)
Mutate = Callable[[dict[str, Mutation]], dict[str, Templates]]  # the `mutate` fixture: {label: mutation} -> trees


@dataclass(frozen=True)
class Resource:
    """One declared resource (the body of a loop stands for each of its items)."""

    file: str
    symbol: str
    type: str
    body: dict[str, Any]
    loop_items: list[Any] | None  # the resolved array a `for` loop runs over
    loop_item_name: str | None

    def __str__(self) -> str:
        return f"{self.file}: {self.symbol} ({self.type})"


def resolve(tree: dict[str, Any], value: Any) -> Any:
    """A variable's value for a bare string naming one of the file's variables, else ``value`` itself."""
    variables = tree.get("variables") or {}
    while isinstance(value, str) and value in variables:
        value = variables[value]["value"]
    return value


def resources(templates: Templates, type_: str | None = None) -> list[Resource]:
    """Every non-``existing`` resource in the templates, optionally of one type."""
    found = []
    for file, tree in templates.items():
        for symbol, decl in (tree.get("resources") or {}).items():
            if decl["existing"] or (type_ and decl["type"] != type_):
                continue
            config = decl["config"]
            if "loop_type" in config:
                detail = config["loop_type"]["detail"]
                items = resolve(tree, detail["array_name"])
                found.append(Resource(file, symbol, decl["type"], config["config"], items, detail["item_name"]))
            else:
                found.append(Resource(file, symbol, decl["type"], config, None, None))
    return found


def declared_names(templates: Templates, type_: str) -> list[str]:
    """The literal names of every resource of ``type_``; fails naming the resource when a name is not literal."""
    names: list[str] = []
    for res in resources(templates, type_):
        tree = templates[res.file]
        if res.loop_items is not None:
            assert res.body["name"] == res.loop_item_name, f"{res}: name it after the loop item"
            candidates = list(res.loop_items) if isinstance(res.loop_items, list) else [res.loop_items]
        else:
            candidates = [resolve(tree, res.body["name"])]
        for name in candidates:
            assert isinstance(name, str) and "${" not in name, f"{res}: name {name!r} is not a literal string"
            names.append(name)
    return names


def app_settings(templates: Templates) -> dict[str, Any]:
    """Every app setting declared for a function app: the ``appsettings`` config and any siteConfig.appSettings."""
    settings: dict[str, Any] = {}
    for res in resources(templates, "Microsoft.Web/sites/config"):
        if res.body["name"] == "appsettings":
            settings.update({key.strip("'"): value for key, value in res.body["properties"].items()})
    for res in resources(templates, "Microsoft.Web/sites"):
        for pair in res.body.get("properties", {}).get("siteConfig", {}).get("appSettings", []):
            settings[pair["name"]] = pair["value"]
    return settings


def walk(value: Any) -> Iterator[Any]:
    """Every node of a tree: dicts, lists and the scalars in them."""
    yield value
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        yield from walk(child)


def mentions(value: Any, identifier: str) -> bool:
    """Whether an expression refers to ``identifier``, directly or inside a ``${...}`` interpolation."""
    inside = re.compile(r"\$\{[^}]*\b" + re.escape(identifier) + r"\b")
    return any(node == identifier or (isinstance(node, str) and inside.search(node)) for node in walk(value))


def list_functions(value: Any) -> list[str]:
    """The list*() functions an expression calls (listKeys, listAccountSas...): they return keys or tokens."""
    calls = [
        node["func_name"]
        for node in walk(value)
        if isinstance(node, dict) and str(node.get("func_name", "")).lower().startswith("list")
    ]
    calls += [m for node in walk(value) if isinstance(node, str) for m in re.findall(r"\b(list\w*)\(", node)]
    return calls


def secure_params(tree: dict[str, Any]) -> set[str]:
    """The file's parameters marked ``@secure()``."""
    return {
        name
        for name, decl in (tree.get("parameters") or {}).items()
        if any(d["type"] == "secure" for d in decl["decorators"])
    }
