"""The data dir, opened: every store a command or a stage may need, and the app lock.

`Services` is made once per process (the server, or one local CLI run) and shared by all
threads: each store is thread-safe. Stages attach what they keep outside state.db to an
app's rename and destroy through the hooks below; the core runs them without knowing whose
they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dockyard.apps import App, AppStore
from dockyard.config_vars import ConfigStore
from dockyard.errors import NotFound
from dockyard.keys import KeyStore
from dockyard.locks import app_lock
from dockyard.names import check_app_name
from dockyard.properties import PropertyStore
from dockyard.settings import Settings
from dockyard.state import StateStore

# A rename hook runs after the new name is committed; a destroy hook runs before the app's
# rows are deleted (so a failing hook leaves an app that can be destroyed again).
RenameHook = Callable[["Services", str, str], None]
DestroyHook = Callable[["Services", str], None]
_rename_hooks: list[RenameHook] = []
_destroy_hooks: list[DestroyHook] = []


# Other owned things (services, storage directories, networks) give up a removed key's
# ownership the way its apps do: `hook(state, key_name, new_owner)`, in one transaction.
ForgetKeyHook = Callable[[StateStore, str, str], None]
_forget_key_hooks: list[ForgetKeyHook] = []


def on_forget_key(hook: ForgetKeyHook) -> ForgetKeyHook:
    _forget_key_hooks.append(hook)
    return hook


# Stages that give an app's name a meaning outside Dockyard (the proxy: APP.<global domain>)
# may refuse a name before an app is created or renamed onto it: `check(services, name,
# app_being_renamed_or_None)` raises a DockyardError.
NameCheck = Callable[["Services", str, "App | None"], None]
_name_checks: list[NameCheck] = []


def on_new_name(check: NameCheck) -> NameCheck:
    _name_checks.append(check)
    return check


def on_rename(hook: RenameHook) -> RenameHook:
    _rename_hooks.append(hook)
    return hook


def on_destroy(hook: DestroyHook) -> DestroyHook:
    _destroy_hooks.append(hook)
    return hook


class Services:
    """The data dir, opened: every store a command may need."""

    def __init__(self, settings: Settings) -> None:
        settings.ensure_layout()
        self.settings = settings
        self.state = StateStore(settings.state_db)
        self.apps = AppStore(self.state)
        self.keys = KeyStore(settings.authorized_keys)
        self.properties = PropertyStore(self.state)
        self.config = ConfigStore(self.state)

    @contextmanager
    def hold(self, app: App) -> Iterator[App]:
        """Hold `app`'s lock, re-reading it under the lock: a command that waited while the
        app was renamed or destroyed must not carry on under a name that is no longer its."""
        with app_lock(self.settings.locks_dir, app.name):
            fresh = self.apps.find(app.name)
            if fresh is None or fresh.id != app.id:
                raise NotFound(f"App {app.name} was renamed or destroyed meanwhile")
            yield fresh

    def create_app(self, name: str, owner: str) -> App:
        """Create an app, if no stage refuses its name."""
        for check in _name_checks:
            check(self, check_app_name(name), None)
        return self.apps.create(name, owner)

    def rename_app(self, old: str, new: str) -> App:
        """Rename in state, if no stage refuses the new name, then let every stage move what
        it keeps under the old name."""
        for check in _name_checks:
            check(self, check_app_name(new), self.apps.get(old))
        app = self.apps.rename(old, new)
        for hook in _rename_hooks:
            hook(self, old, new)
        return self.apps.get(app.name)

    def forget_key(self, key_name: str) -> None:
        """A removed key's apps and everything else it owned pass to `removed:NAME`, which
        no key can be called, so a later key under the same name inherits nothing."""
        with self.state.transaction():
            self.apps.forget_key(key_name)
            for hook in _forget_key_hooks:
                hook(self.state, key_name, f"removed:{key_name}")

    def destroy_app(self, name: str) -> None:
        """Outside resources first: if one of them fails, the app still exists and the
        destroy can be run again, instead of leaving containers nobody can name."""
        app = self.apps.get(name)
        for hook in _destroy_hooks:
            hook(self, app.name)
        self.apps.delete(app)
