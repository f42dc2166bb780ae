"""Per-app and global settings (Dokku's "properties"), declared once by the stage that owns
them.

A stage declares a `PropertyGroup` (`git`, `builder`, `proxy`…) and its properties: name,
the levels it exists at, a parser with bounds, a default, whether it is secret. The
`X:set` / `X:report` commands of every group are derived from these declarations
(`dockyard.property_commands`), so parsing, the global-versus-app rule, messages and events
are written once. Values are stored as the parser's normal form under `GROUP.NAME` in two
generic tables; an app value overrides the global one, which overrides the default.

Invariant: nothing reaches the store unparsed — `Property.set` is the only writer of a
declared property, and every parser refuses what it cannot bound (NaN, infinities, values
outside the range, anything that is not exactly the expected shape).
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from dockyard.apps import App
from dockyard.errors import UsageError
from dockyard.state import StateStore, register_migrations

T = TypeVar("T")


class PropertyStore:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    def get(self, app: App | None, key: str, default: str | None = None) -> str | None:
        if app is not None:
            row = self.state.query_one(
                "SELECT value FROM app_settings WHERE app_id = ? AND key = ?", (app.id, key)
            )
            if row:
                return row["value"]
        row = self.state.query_one("SELECT value FROM global_settings WHERE key = ?", (key,))
        return row["value"] if row else default

    def get_local(self, app: App | None, key: str) -> str | None:
        """The value set at exactly this level (app, or global when `app` is None)."""
        if app is None:
            row = self.state.query_one("SELECT value FROM global_settings WHERE key = ?", (key,))
        else:
            row = self.state.query_one(
                "SELECT value FROM app_settings WHERE app_id = ? AND key = ?", (app.id, key)
            )
        return row["value"] if row else None

    def set(self, app: App | None, key: str, value: str | None) -> None:
        """Set a value, or unset it when `value` is None or empty (as `dokku …:set` does)."""
        with self.state.transaction() as conn:
            if app is None:
                if value:
                    conn.execute(
                        "INSERT OR REPLACE INTO global_settings (key, value) VALUES (?, ?)",
                        (key, value),
                    )
                else:
                    conn.execute("DELETE FROM global_settings WHERE key = ?", (key,))
            elif value:
                conn.execute(
                    "INSERT OR REPLACE INTO app_settings (app_id, key, value) VALUES (?, ?, ?)",
                    (app.id, key, value),
                )
            else:
                conn.execute(
                    "DELETE FROM app_settings WHERE app_id = ? AND key = ?", (app.id, key)
                )


class BadValue(UsageError):
    """A parser's refusal, as a predicate on the setting's name: `is one of: a, b`."""


class Level(enum.Flag):
    APP = enum.auto()
    GLOBAL = enum.auto()
    BOTH = APP | GLOBAL


Parser = Callable[[str], str]


@dataclass(eq=False)
class Property(Generic[T]):
    """One setting. `parse` turns what a user typed into the stored form (or refuses it);
    `load` turns the stored form into the value code uses."""

    group: PropertyGroup
    name: str
    parse: Parser
    load: Callable[[str], T]
    default: str = ""
    levels: Level = Level.BOTH
    secret: bool = False
    help: str = ""
    note: str = ""  # said after a change, e.g. when it takes effect
    label: str = ""  # report label, when Dokku's differs from "<Group> <name>"
    # Values that need an admin key beyond access to the app, decided before the value is
    # parsed (a parser may read a file on the server, which only an admin may ask for).
    admin_only: Callable[[str], bool] | None = None

    @property
    def key(self) -> str:
        return f"{self.group.name}.{self.name}"

    @property
    def report_label(self) -> str:
        return self.label or f"{self.group.title} {self.name.replace('-', ' ')}"

    def raw(self, store: PropertyStore, app: App | None) -> str:
        """The effective stored form: the app's, else the global one, else the default."""
        return store.get(app, self.key) or self.default

    def get(self, store: PropertyStore, app: App | None) -> T:
        return self.load(self.raw(store, app))

    def local(self, store: PropertyStore, app: App | None) -> str:
        return store.get_local(app, self.key) or ""

    def check_level(self, app: App | None) -> None:
        if app is None and Level.GLOBAL not in self.levels:
            raise UsageError(f"{self.name} is set per app: {self.group.name}:set APP {self.name} …")
        if app is not None and Level.APP not in self.levels:
            raise UsageError(
                f"{self.name} can only be set with --global: "
                f"{self.group.name}:set --global {self.name} …"
            )

    def needs_admin(self, value: str) -> bool:
        return bool(value) and self.admin_only is not None and self.admin_only(value)

    def set(self, store: PropertyStore, app: App | None, value: str) -> str:
        """Parse and store (an empty value unsets); returns what was stored. The caller has
        checked `needs_admin`."""
        self.check_level(app)
        stored = self.checked(value) if value else ""
        store.set(app, self.key, stored)
        return stored

    def checked(self, value: str) -> str:
        try:
            return self.parse(value)
        except BadValue as exc:
            shown = "" if self.secret else f" (got {value!r})"
            raise UsageError(f"{self.name} {exc.message}{shown}") from None

    def shown(self, value: str) -> object:
        return "(hidden)" if self.secret and value else value

    def change(self, typed: str, stored: str) -> str:
        """What a change did, for its message and its event; never a secret's value."""
        if not stored:
            return f"Unsetting {self.name}"
        if self.secret:
            return f"Setting {self.name}"
        return f"Setting {self.name} to {stored}"


@dataclass(eq=False)
class MapProperty(Property[dict[str, str]]):
    """A setting holding named entries, set one `NAME=VALUE` at a time (`NAME=` removes
    one), such as build args. Entry names are data, so the map is one JSON value."""

    entry_name: re.Pattern[str] = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")

    def set(self, store: PropertyStore, app: App | None, value: str) -> str:
        self.check_level(app)
        name, sep, entry = value.partition("=")
        if not sep or not self.entry_name.fullmatch(name):
            raise UsageError(f"{self.name} takes NAME=VALUE (NAME= unsets it)")
        entries = self.get(store, app) if app is not None else {}
        if entry:
            entries[name] = self.checked(entry)
        else:
            entries.pop(name, None)
        store.set(app, self.key, json.dumps(entries, sort_keys=True) if entries else "")
        return entry

    def shown(self, value: str) -> object:
        """Entry names only: values are often tokens."""
        return sorted(json.loads(value)) if value else []

    def change(self, typed: str, stored: str) -> str:
        name = typed.partition("=")[0]
        return f"{'Setting' if stored else 'Unsetting'} {self.name} {name}"


def _load_map(stored: str) -> dict[str, str]:
    return json.loads(stored) if stored else {}


@dataclass(eq=False)
class PropertyGroup:
    """The settings of one stage under one name: `git` → `git:set`, `git:report`."""

    name: str
    title: str = ""
    properties: dict[str, Property] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.title = self.title or self.name.capitalize()
        GROUPS[self.name] = self

    def declare(
        self,
        name: str,
        parse: Parser,
        load: Callable[[str], T] = str,  # type: ignore[assignment]
        **options: object,
    ) -> Property[T]:
        prop: Property[T] = Property(self, name, parse, load, **options)  # type: ignore[arg-type]
        return self._add(prop)

    def declare_map(self, name: str, parse: Parser = str, **options: object) -> MapProperty:
        options.setdefault("levels", Level.APP)
        prop = MapProperty(self, name, parse, _load_map, **options)  # type: ignore[arg-type]
        return self._add(prop)

    def _add(self, prop: P) -> P:
        if prop.name in self.properties:
            raise RuntimeError(f"property {prop.key} declared twice")
        self.properties[prop.name] = prop
        return prop

    def find(self, name: str) -> Property:
        try:
            return self.properties[name]
        except KeyError:
            known = ", ".join(sorted(self.properties))
            raise UsageError(f"Unknown {self.name} setting {name!r}; use one of {known}") from None


P = TypeVar("P", bound=Property)
GROUPS: dict[str, PropertyGroup] = {}

# Keys from before properties were declared per group, renamed once on open.
register_migrations(
    "properties",
    [
        f"UPDATE {table} SET key = '{new}' WHERE key = '{old}'"
        for table in ("app_settings", "global_settings")
        for old, new in (
            ("deployer.checks-disabled", "checks.disabled"),
            ("deployer.wait-to-retire", "checks.wait-to-retire"),
            ("deployer.restart-policy", "ps.restart-policy"),
            ("deployer.resource-memory", "resource.memory"),
            ("deployer.resource-cpu", "resource.cpu"),
            ("builder.build-args", "builder.build-arg"),
        )
    ],
)


# -- parsers: each one refuses what it cannot bound ----------------------------------------


def choice(*values: str) -> Parser:
    def parse(value: str) -> str:
        if value not in values:
            raise BadValue(f"is one of: {', '.join(values)}")
        return value

    return parse


BOOLEAN = choice("true", "false")


def whole_number(low: int, high: int) -> Parser:
    def parse(value: str) -> str:
        if not re.fullmatch(r"[0-9]{1,12}", value) or not low <= int(value) <= high:
            raise BadValue(f"takes a whole number of at least {low} and at most {high}")
        return str(int(value))

    return parse


def decimal(low: float, high: float, *, above: bool = False) -> Parser:
    """A finite decimal number (`1.5`, `0.25`; no exponents, NaN or infinities) from `low`
    (or, with `above`, greater than it) up to `high`."""
    bound = f"greater than {low:g}" if above else f"of at least {low:g}"

    def parse(value: str) -> str:
        number = float(value) if re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,6})?", value) else math.nan
        if not (math.isfinite(number) and (number > low if above else number >= low)
                and number <= high):  # fmt: skip
            raise BadValue(f"takes a decimal number {bound} and at most {high:g}, like 1.5")
        return f"{number:g}"

    return parse


def described(groups: Iterable[PropertyGroup]) -> list[tuple[str, str, str, str, str]]:
    """(setting, levels, default, secret, help) for the docs' settings table."""
    rows = []
    for group in groups:
        for prop in group.properties.values():
            levels = "/".join(
                lv.name.lower() for lv in (Level.APP, Level.GLOBAL) if lv in prop.levels
            )
            rows.append((prop.key, levels, prop.default, "yes" if prop.secret else "", prop.help))
    return rows
