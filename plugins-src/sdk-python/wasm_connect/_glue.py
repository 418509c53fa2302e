"""The WIT side of the SDK: turns the author's classes into the exports componentize-py
looks for (`Connector` in the app module, `SourceTask` in module `source`, `SinkTask` in
module `sink`) and maps exceptions to `task-error`. The generated `wit_world` bindings exist
only inside a componentize-py build, so they are imported on first use: the SDK also imports
in plain CPython, where tests drive the author's classes directly."""

from __future__ import annotations

import traceback

_registered = {}


def _world():
    import wit_world.imports.host as host
    import wit_world.imports.types as types
    from componentize_py_types import Err
    return host, types, Err


def log(level, message):
    host, _, _ = _world()
    host.log(getattr(host.LogLevel, level.name), message)


def committed_position(partition):
    host, _, _ = _world()
    return host.committed_position(partition)


def connector_name():
    host, _, _ = _world()
    return host.connector_name()


def task_id():
    host, _, _ = _world()
    return host.task_id()


def _descriptor(d):
    _, types, _ = _world()
    return types.Descriptor(
        name=d.name, version=d.version, kind=getattr(types.ConnectorKind, d.kind.name),
        description=d.description, aliases=list(d.aliases),
        config_defs=[types.ConfigDef(
            name=c.name, description=c.description,
            value_type=getattr(types.ValueType, c.value_type.name), required=c.required,
            default_value=c.default, secret=c.secret,
            path=getattr(types.PathAccess, c.path.name) if c.path is not None else None,
        ) for c in d.config_defs],
    )


def _message(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if type(e).__module__ != "wasm_connect":
        # An unexpected exception: say where, so the author can find it in the task trace.
        frame = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
        where = f" at {frame[0].filename}:{frame[0].lineno}" if frame else ""
        text = f"{type(e).__name__}: {text}{where}"
    return text


def task_error(e: BaseException):
    """The WIT `task-error` for an exception raised by the author's task."""
    from . import Retriable
    _, types, Err = _world()
    if isinstance(e, Retriable):
        return Err(types.TaskError_Retriable(_message(e)))
    return Err(types.TaskError_Fatal(_message(e)))


def new_task(kind, config_pairs):
    from . import Config, Host
    entry = _registered.get(kind)
    if entry is None:
        raise RuntimeError(f"no {kind.value} connector registered: call export_{kind.value}()")
    return entry[1](Config.from_pairs(config_pairs), Host())


def export(kind, connector_cls, task_cls):
    from . import Config
    _registered[kind] = (connector_cls, task_cls)

    class Connector:
        """The `connector` interface export, delegating to the author's connector."""

        def describe(self):
            return _descriptor(connector_cls().describe())

        def validate(self, config):
            _, types, Err = _world()
            problems = connector_cls().validate(Config.from_pairs(config))
            if problems:
                raise Err([types.ConfigError(key=p.key, message=p.message) for p in problems])

        def task_configs(self, config, max_tasks):
            _, _, Err = _world()
            try:
                configs = connector_cls().task_configs(Config.from_pairs(config), max_tasks)
            except Exception as e:  # noqa: BLE001 - every failure becomes the WIT error
                raise Err(_message(e))
            return [list(Config(c).items()) for c in configs]

    return Connector
