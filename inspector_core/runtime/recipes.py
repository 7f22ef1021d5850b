"""Recipes: several products in one station file, each an override-merge of the base chain.

A station file with ``recipes:`` is a base chain (``steps``, ``rules``, ...) and, per recipe,
only what differs (docs/recipes.md)::

    recipes:
      plate-a: {}                                  # the base chain as written
      plate-b:
        products: ["2"]                            # the PLC's product code(s) for it
        steps:
          scratch: {roi: {x: 260, width: 500}, config: {min_dark_contrast_gray: 20}}
          dent: null                               # not inspected on this product
          edge: {detector: scratch, after: align}  # a step only this product has
        rules: {dent: null, scratch: {min_score: 0.6}}

Each recipe is resolved (:func:`resolve`) into a whole station file and validated as one, so
``inspector validate`` checks every recipe and names it in each problem. The station loaded is
the active recipe's (``recipe:``, default the first) with every recipe in ``Station.recipes``.
A recipe's hash (:func:`recipe_hash`) is the sha256 of its resolved config: the same for every
edit that does not change what that recipe inspects, whatever else changes in the file.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from inspector_core.plugins import Registry
    from inspector_core.runtime.config import Station, StationSpec

_OWN = ("description", "products", "preload")
"""A recipe's keys about the recipe itself, not merged into the station."""
_KEYED = ("rules", "measurements")
"""Mappings merged key by key, where ``null`` removes a key."""


def _deep(base: Any, over: Any) -> Any:
    """``over`` merged onto ``base``: mappings key by key (recursively), anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _deep(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def _step_name(step: dict[str, Any]) -> str:
    return str(step.get("name") or step.get("detector"))


def _merge_steps(
    steps: list[dict[str, Any]], overrides: dict[str, Any], where: str, problems: list[str]
) -> list[dict[str, Any]]:
    out = [dict(s) for s in steps]
    for name, over in overrides.items():
        names = [_step_name(s) for s in out]
        at = f"{where}.steps.{name}"
        if name in names and over is None:
            del out[names.index(name)]
            continue
        if over is None:
            problems.append(f"{at}: null removes a step, but the chain has no step named {name!r} ({', '.join(names)})")
            continue
        over = dict(over)
        after = over.pop("after", None)
        if "name" in over and over["name"] != name:
            problems.append(f"{at}.name: a recipe cannot rename a step (the key is the step's name)")
            continue
        if name in names:
            i = names.index(name)
            step = _deep(out.pop(i), over)
            pos = i
        elif "detector" in over:
            step = {**over, "name": name}
            pos = len(out)
        else:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(
                f"{at}: the chain has no step named {name!r} (steps: {', '.join(names)}); {hint}"
                "to add a step here give its detector"
            )
            continue
        if after is not None:
            rest = [_step_name(s) for s in out]
            if after not in rest:
                problems.append(f"{at}.after: no step named {after!r} to put it after (steps: {', '.join(rest)})")
                continue
            pos = rest.index(after) + 1
        out.insert(pos, step)
    return out


def _merge_keyed(base: Any, over: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    out = dict(base or {})
    for k, v in over.items():
        if v is None:
            if k not in out:
                problems.append(f"{where}.{k}: null removes it, but the chain has none ({', '.join(out) or 'none'})")
            out.pop(k, None)
        else:
            out[k] = _deep(out.get(k), v) if k in out else copy.deepcopy(v)
    return out


def resolve(data: dict[str, Any], name: str) -> tuple[dict[str, Any], list[str]]:
    """The station file ``data`` as recipe ``name`` sees it (its overrides merged onto the base
    chain), and the problems of the overrides themselves (a step that is not there, ...)."""
    problems: list[str] = []
    where = f"recipes.{name}"
    out = {k: copy.deepcopy(v) for k, v in data.items()}
    for key, over in (data["recipes"][name] or {}).items():
        if key in _OWN:
            continue
        if key == "steps":
            out["steps"] = _merge_steps(out["steps"], over or {}, where, problems)
        elif key in _KEYED:
            out[key] = _merge_keyed(out.get(key), over or {}, f"{where}.{key}", problems)
        elif over is not None:
            out[key] = _deep(out[key], over) if key in out else copy.deepcopy(over)
    return out, problems


def recipe_hash(spec: StationSpec) -> str:
    """sha256 of a resolved recipe's config (the station's settings as that recipe runs them),
    key order, defaults and the other recipes left out: stable while that recipe does not change
    (a setting written out at its default, or a new setting added to Inspector, changes nothing)."""
    body = spec.model_dump(mode="json", exclude={"recipes", "recipe", "description"}, exclude_defaults=True)
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def recipe_of_product(station: Station, product: str) -> str | None:
    """The recipe a product code selects: the recipe listing it in ``products``, or named so."""
    for name, r in station.spec.recipes.items():
        if product in r.products:
            return name
    return product if product in station.recipes else None


def recipe_station(station: Station, name: str | None) -> Station:
    """The whole station of recipe ``name`` (``None``: ``station`` itself), for the commands that
    work per recipe (``inspector teach``, ``inspector train anomaly``); ``KeyError`` with a message
    listing the recipes for a name the station does not have."""
    if name is None:
        return station
    if name not in station.recipes:
        listed = ", ".join(station.recipes) or "none: the station has no recipes: section"
        raise KeyError(f"{station.path}: no recipe {name!r} (recipes: {listed})")
    return station.recipes[name]


def load_recipes(
    path: Path, file: str, text: str, data: dict[str, Any], spec: StationSpec, registry: Registry, *, check_files: bool
) -> Station:
    """Every recipe of the file resolved and validated as a whole station; the active one
    (``recipe:``, default the first) returned with all of them in ``Station.recipes``. A
    problem of one recipe is named by it; one that every recipe has is said once."""
    from inspector_core.runtime.config import ConfigError, StationSpec, _errors, _station

    if not spec.recipes:
        raise ConfigError(file, [f"recipe: {spec.recipe!r} is named, but the station has no recipes: section"])
    if spec.recipe is not None and spec.recipe not in spec.recipes:
        close = difflib.get_close_matches(spec.recipe, list(spec.recipes), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(file, [f"recipe: no recipe named {spec.recipe!r} (recipes: {', '.join(spec.recipes)}){hint}"])
    own: list[str] = []
    owner: dict[str, str] = {}
    for name, r in spec.recipes.items():
        for code in r.products:
            other = owner.get(code) or (code if code in spec.recipes and code != name else None)
            if other is not None and other != name:
                own.append(f"recipes.{name}.products: {code!r} already selects recipe {other!r}; give each code once")
            owner.setdefault(code, name)
    per: dict[str, list[str]] = {}
    stations: dict[str, Station] = {}
    for name in spec.recipes:
        resolved, problems = resolve(data, name)
        own.extend(problems)
        # The overrides that merged are validated even when others did not: a problem of the
        # station as this recipe sees it (a base step's) is said in the same pass, not after the
        # override is fixed (the station does not start either way).
        try:
            rspec = StationSpec.model_validate(resolved)
        except ValidationError as exc:
            per[name] = _errors(exc)
            continue
        try:
            st = _station(path, file, text, rspec, registry, check_files=check_files)
        except ConfigError as exc:
            per[name] = exc.problems
            continue
        stations[name] = dataclasses.replace(st, recipe=name, recipe_hash=recipe_hash(rspec))
    common = set.intersection(*(set(p) for p in per.values())) if len(per) == len(spec.recipes) > 1 else set()
    out = list(own)
    out += [p for p in next(iter(per.values()), []) if p in common]
    for name, problems in per.items():
        out += [f"recipe {name}: {p}" for p in problems if p not in common]
    if out:
        raise ConfigError(file, out)
    active = spec.recipe or next(iter(spec.recipes))
    return dataclasses.replace(stations[active], recipes=stations)
