"""The plugin contract as pluggy hook specifications.

A plugin is a module (or any object) exposed through the ``nnplug`` entry-point group that
implements some of these hooks, each marked with :data:`nnplug.hookimpl`.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "nnplug"
ENTRY_POINT_GROUP = "nnplug"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def nnplug_register_layers() -> list[type]:
    """Return the layer and loss classes this plugin provides.

    Each class subclasses :class:`nnplug.Layer` or :class:`nnplug.Loss` and has a ``Config``
    subclassing :class:`nnplug.LayerConfig` whose ``type`` field is a single-string
    ``Literal`` with that string as its default: that string is the registered type name.

    The registry calls this hook once per plugin, right after importing it. If it raises,
    or any returned class breaks the contract or claims a type name another plugin already
    registered, none of the plugin's classes are registered and the plugin is reported as
    failed, by distribution name, version and error. Other plugins are unaffected.

    Returns:
        A list (or other iterable) of classes; an empty list is allowed.
    """
    raise NotImplementedError  # pragma: no cover - specification only
