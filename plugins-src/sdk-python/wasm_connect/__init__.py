"""wasm-connect connector SDK for Python.

Write a connector as plain Python: subclass `Connector` and `SourceTask` (or `SinkTask`),
then end your app module with `Connector = export_source(MyConnector, MyTask)` (or
`export_sink`). `componentize-py` (pinned 0.25.1) turns the module into a component for the
`source-connector` or `sink-connector` world of `wit/connector.wit`: the SDK holds all the
WIT glue, you never touch the generated bindings.

The shape is the Rust SDK's: `describe` / `validate` / `task_configs` on the connector,
`start` / `poll` / `commit` / `stop` on a source task, `start` / `put` / `flush` / `stop`
on a sink task, a `BatchWriter` that writes the record frames into one preallocated
`bytearray`, a `BatchReader` that reads them, a `Host` (log, committed position) and errors
as exceptions (`Retriable`, `Fatal`) that the SDK maps to the WIT `task-error`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

from . import _glue

__all__ = [
    "BatchReader", "BatchWriter", "Config", "ConfigDef", "ConfigProblem", "Connector",
    "Descriptor", "Fatal", "FrameError", "Host", "Kind", "LogLevel", "PathAccess", "Position",
    "Record", "Retriable", "SinkTask", "SourceTask", "TaskError", "ValueType",
    "export_sink", "export_source",
]

NO_KEY = 0xFFFF_FFFF


class Kind(enum.Enum):
    """Source (produces records) or sink (consumes them)."""
    SOURCE = "source"
    SINK = "sink"


class ValueType(enum.Enum):
    """How the host reads a config value."""
    TEXT = "text"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    LIST = "list"


class PathAccess(enum.Enum):
    """Filesystem access a path-typed key asks for: the host grants exactly that."""
    READ_FILE = "read-file"
    WRITE_FILE = "write-file"


class LogLevel(enum.Enum):
    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class TaskError(Exception):
    """A task call failed; raise `Retriable` or `Fatal`, not this base class."""


class Retriable(TaskError):
    """A passing condition: the host keeps the task and calls again later."""


class Fatal(TaskError):
    """The task cannot go on: the host marks it FAILED with this message."""


class FrameError(Fatal):
    """A record batch is malformed, or a record field is too long for the frame format."""


@dataclass(frozen=True)
class ConfigDef:
    """One config key the connector understands (`config-def` in the WIT)."""
    name: str
    description: str
    required: bool = False
    value_type: ValueType = ValueType.TEXT
    default: Optional[str] = None
    secret: bool = False
    path: Optional[PathAccess] = None


@dataclass(frozen=True)
class Descriptor:
    """What a connector says about itself (`descriptor` in the WIT)."""
    name: str
    version: str
    kind: Kind
    description: str
    aliases: Sequence[str] = ()
    config_defs: Sequence[ConfigDef] = ()


@dataclass(frozen=True)
class ConfigProblem:
    """A rejected config value: the key and a sentence the user can act on."""
    key: str
    message: str


@dataclass(frozen=True)
class Position:
    """Where a task stands in one partition of the outside system."""
    partition: str
    position: str


class Config(dict):
    """A connector or task config: every value a string."""

    @classmethod
    def from_pairs(cls, pairs: Sequence[Tuple[str, str]]) -> "Config":
        return cls(pairs)

    def get_any(self, *keys: str) -> Optional[str]:
        """The value of the first of `keys` that is set (for keys with several spellings)."""
        for key in keys:
            if key in self:
                return self[key]
        return None

    def pairs(self) -> List[Tuple[str, str]]:
        return list(self.items())


@dataclass
class Record:
    """One record of a batch. `key` None means "no key"; `timestamp` 0 lets the host stamp it."""
    value: bytes
    key: Optional[bytes] = None
    timestamp: int = 0
    headers: Sequence[Tuple[str, bytes]] = ()
    topic: str = ""
    partition: str = ""
    position: str = ""


class Host:
    """What the host offers a task (the WIT `host` interface)."""

    def log(self, level: LogLevel, message: str) -> None:
        _glue.log(level, message)

    def committed_position(self, partition: str) -> Optional[str]:
        """The last position the host durably committed for `partition`, if any."""
        return _glue.committed_position(partition)

    def connector_name(self) -> str:
        return _glue.connector_name()

    def task_id(self) -> Optional[int]:
        return _glue.task_id()


_HEAD = struct.Struct("<Iq")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


class BatchWriter:
    """Writes records in the frame layout into one preallocated `bytearray`, grown by
    doubling when a record does not fit."""

    __slots__ = ("_buf", "_len", "_count")

    def __init__(self, capacity: int = 64 * 1024) -> None:
        self._buf = bytearray(capacity)
        self._len = 0
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    @property
    def byte_len(self) -> int:
        return self._len

    def clear(self) -> None:
        self._len = 0
        self._count = 0

    def push(self, value: bytes, *, key: Optional[bytes] = None, timestamp: int = 0,
             headers: Sequence[Tuple[str, bytes]] = (), topic: str = "",
             partition: str = "", position: str = "") -> None:
        """Appends one record. Strings are UTF-8 encoded; bytes are taken as they are."""
        key_b = _bytes(key) if key is not None else None
        value_b = _bytes(value)
        topic_b, partition_b, position_b = (_short(topic, "topic"), _short(partition, "partition"),
                                            _short(position, "position"))
        head_b = [(_short(name, "header name"), _bytes(v)) for name, v in headers]
        body = (8 + 4 + (len(key_b) if key_b is not None else 0) + 4 + len(value_b) + 2
                + sum(2 + len(n) + 4 + len(v) for n, v in head_b)
                + 6 + len(topic_b) + len(partition_b) + len(position_b))
        if body > 0xFFFF_FFFF - 4:
            raise FrameError(f"a record of {body} bytes is too long for the frame format")
        at = self._reserve(4 + body)
        buf = self._buf
        _HEAD.pack_into(buf, at, body, timestamp)
        at += 12
        if key_b is None:
            _U32.pack_into(buf, at, NO_KEY)
            at += 4
        else:
            at = _put(buf, at, _U32, key_b)
        at = _put(buf, at, _U32, value_b)
        _U16.pack_into(buf, at, len(head_b))
        at += 2
        for name, v in head_b:
            at = _put(buf, at, _U16, name)
            at = _put(buf, at, _U32, v)
        at = _put(buf, at, _U16, topic_b)
        at = _put(buf, at, _U16, partition_b)
        _put(buf, at, _U16, position_b)
        self._count += 1

    def push_record(self, record: Record) -> None:
        self.push(record.value, key=record.key, timestamp=record.timestamp,
                  headers=record.headers, topic=record.topic, partition=record.partition,
                  position=record.position)

    def frames(self) -> bytes:
        return bytes(memoryview(self._buf)[: self._len])

    def _reserve(self, size: int) -> int:
        at = self._len
        need = at + size
        if need > len(self._buf):
            grown = max(need, 2 * len(self._buf))
            self._buf.extend(bytes(grown - len(self._buf)))
        self._len = need
        return at


def _put(buf: bytearray, at: int, prefix: struct.Struct, data: bytes) -> int:
    prefix.pack_into(buf, at, len(data))
    at += prefix.size
    end = at + len(data)
    buf[at:end] = data
    return end


def _bytes(data) -> bytes:
    if isinstance(data, str):
        return data.encode()
    return bytes(data)


def _short(text: str, what: str) -> bytes:
    data = text.encode()
    if len(data) > 0xFFFF:
        raise FrameError(f"{what} of {len(data)} bytes is too long for the frame format (at most 65535)")
    return data


class BatchReader:
    """Reads the records of a batch; a malformed buffer raises `FrameError`."""

    def __init__(self, frames: bytes, count: int) -> None:
        self._frames = memoryview(frames)
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Record]:
        data, at = self._frames, 0
        for index in range(self._count):
            try:
                (body,) = _U32.unpack_from(data, at)
                end = at + 4 + body
                if end > len(data):
                    raise FrameError(f"record {index} is cut off by the end of the batch")
                at += 4
                (timestamp,) = struct.unpack_from("<q", data, at)
                at += 8
                (key_len,) = _U32.unpack_from(data, at)
                at += 4
                key = None
                if key_len != NO_KEY:
                    key, at = bytes(data[at:at + key_len]), at + key_len
                (value_len,) = _U32.unpack_from(data, at)
                at += 4
                value, at = bytes(data[at:at + value_len]), at + value_len
                (n_headers,) = _U16.unpack_from(data, at)
                at += 2
                headers = []
                for _ in range(n_headers):
                    name, at = _take16(data, at)
                    (v_len,) = _U32.unpack_from(data, at)
                    at += 4
                    headers.append((name.decode(), bytes(data[at:at + v_len])))
                    at += v_len
                topic, at = _take16(data, at)
                partition, at = _take16(data, at)
                position, at = _take16(data, at)
                if at != end:
                    raise FrameError(f"record {index}: declared length does not match its fields")
                yield Record(value=value, key=key, timestamp=timestamp, headers=headers,
                             topic=topic.decode(), partition=partition.decode(),
                             position=position.decode())
            except (struct.error, UnicodeDecodeError) as e:
                raise FrameError(f"record {index} is malformed: {e}") from e


def _take16(data: memoryview, at: int) -> Tuple[bytes, int]:
    (n,) = _U16.unpack_from(data, at)
    at += 2
    return bytes(data[at:at + n]), at + n


class Connector:
    """Connector-level behaviour. Override `describe`; `validate` and `task_configs` have
    defaults (accept; one task with the whole config)."""

    def describe(self) -> Descriptor:
        raise NotImplementedError("a Connector must override describe()")

    def validate(self, config: Config) -> List[ConfigProblem]:
        """Problems beyond the `required` flags, which the host checks first; [] accepts."""
        return []

    def task_configs(self, config: Config, max_tasks: int) -> List[Config]:
        return [config]


class SourceTask:
    """One running source task. Build it in `__init__(self, config, host)`."""

    def __init__(self, config: Config, host: Host) -> None:
        self.config = config
        self.host = host

    def poll(self, out: BatchWriter, max_records: int, max_bytes: int) -> None:
        """Push up to `max_records` records (about `max_bytes` bytes) into `out`; pushing
        none means "nothing now"."""
        raise NotImplementedError("a SourceTask must override poll()")

    def commit(self, positions: List[Position]) -> None:
        """These positions are durably committed."""

    def stop(self) -> None:
        """The last call the task receives."""


class SinkTask:
    """One running sink task. Build it in `__init__(self, config, host)`."""

    def __init__(self, config: Config, host: Host) -> None:
        self.config = config
        self.host = host

    def put(self, topic: str, first_offset: int, records: BatchReader) -> None:
        raise NotImplementedError("a SinkTask must override put()")

    def flush(self) -> List[Position]:
        """Make everything put so far durable; the positions come back through
        `host.committed_position` after a restart."""
        return []

    def stop(self) -> None:
        """The last call the task receives."""


def export_source(connector: type, task: type) -> type:
    """Registers a source connector; assign the result to `Connector` in your app module."""
    return _glue.export(Kind.SOURCE, connector, task)


def export_sink(connector: type, task: type) -> type:
    """Registers a sink connector; assign the result to `Connector` in your app module."""
    return _glue.export(Kind.SINK, connector, task)
