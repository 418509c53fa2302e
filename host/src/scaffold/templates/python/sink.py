"""{{name}}: a sink connector made by `wasm-connect new`. It logs each record it is given
and commits their count; replace `put` and `flush` with writing your system."""

from wasm_connect import (
    BatchReader, Config, ConfigDef, Connector, Descriptor, Fatal, Kind, LogLevel, Position,
    SinkTask, export_sink,
)


class Plugin(Connector):
    def describe(self) -> Descriptor:
        return Descriptor(
            name="{{name}}",
            version="0.1.0",
            kind=Kind.SINK,
            description="{{name}}: logs the records it consumes (made by wasm-connect new).",
            config_defs=[ConfigDef("topics", "Comma-separated topics to consume.", required=True)],
        )


class Task(SinkTask):
    def __init__(self, config: Config, host) -> None:
        super().__init__(config, host)
        committed = host.committed_position("{{name}}")
        if committed is not None and not committed.isdigit():
            raise Fatal(f"committed position {committed!r} is not a count")
        self.count = int(committed) if committed is not None else 0

    def put(self, topic: str, first_offset: int, records: BatchReader) -> None:
        for offset, record in enumerate(records, first_offset):
            self.host.log(LogLevel.INFO, f"{topic}@{offset}: {record.value.decode(errors='replace')}")
            self.count += 1

    def flush(self):
        return [Position("{{name}}", str(self.count))]


Connector = export_sink(Plugin, Task)
