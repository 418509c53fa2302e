"""python-jsonl-sink: writes each record as one JSON line to a file, keeping only the
fields named by `fields` (all fields when unset).

A record whose value is a JSON object is filtered and written as an object; any other value
is written as `{"value": <the value as text>}`. `flush` syncs the file and returns its
length as the position; on start the file is truncated to the committed length, so lines
written after the last commit (which the host offers again) are not duplicated.
"""

import json
import os

from wasm_connect import (
    BatchReader, Config, ConfigDef, ConfigProblem, Connector, Descriptor, Fatal, Kind,
    PathAccess, Position, Retriable, SinkTask, ValueType, export_sink,
)

FILE_KEYS = ("filename", "file")


class JsonlSink(Connector):
    def describe(self) -> Descriptor:
        return Descriptor(
            name="python-jsonl-sink",
            version="0.1.0",
            kind=Kind.SINK,
            description="Writes records as JSON lines to a file, keeping chosen fields (Python).",
            aliases=[],
            config_defs=[
                ConfigDef("filename", "The file to append to (Kafka spelling: `file`).",
                          path=PathAccess.WRITE_FILE),
                ConfigDef("file", "Kafka spelling of `filename`.", path=PathAccess.WRITE_FILE),
                ConfigDef("topics", "Comma-separated topics to consume."),
                ConfigDef("topicNames", "RocketMQ spelling of `topics`."),
                ConfigDef("fields", "Comma-separated fields to keep (all when unset).",
                          value_type=ValueType.LIST),
            ],
        )

    def validate(self, config: Config):
        problems = []
        if not config.get_any(*FILE_KEYS):
            problems.append(ConfigProblem("filename", "Request config key: filename"))
        if not config.get_any("topics", "topicNames"):
            problems.append(ConfigProblem("topics", "Request config key: topics"))
        return problems


class JsonlTask(SinkTask):
    def __init__(self, config: Config, host) -> None:
        super().__init__(config, host)
        self.path = config.get_any(*FILE_KEYS) or ""
        fields = config.get("fields")
        self.fields = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
        committed = host.committed_position(self.path)
        try:
            self.file = open(self.path, "ab")
            if committed is not None:
                self.file.truncate(int(committed))
        except (OSError, ValueError) as e:
            raise Fatal(f"cannot open {self.path} at committed length {committed}: {e}")

    def _line(self, value: bytes) -> bytes:
        try:
            document = json.loads(value)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            document = {"value": value.decode(errors="replace")}
        elif self.fields is not None:
            document = {k: document[k] for k in self.fields if k in document}
        return json.dumps(document, separators=(",", ":")).encode() + b"\n"

    def put(self, topic: str, first_offset: int, records: BatchReader) -> None:
        lines = b"".join(self._line(r.value) for r in records)
        try:
            self.file.write(lines)
        except OSError as e:
            raise Retriable(f"cannot write {self.path}: {e}")

    def flush(self):
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            return [Position(self.path, str(self.file.tell()))]
        except OSError as e:
            raise Retriable(f"cannot sync {self.path}: {e}")

    def stop(self) -> None:
        self.file.close()


Connector = export_sink(JsonlSink, JsonlTask)
