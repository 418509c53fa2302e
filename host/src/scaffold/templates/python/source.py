"""{{name}}: a source connector made by `wasm-connect new`. It emits a few records with its
name in them, then nothing; replace `poll` with reading your system."""

from wasm_connect import (
    BatchWriter, Config, ConfigDef, Connector, Descriptor, Fatal, Kind, SourceTask,
    export_source,
)

RECORDS = 5


class Plugin(Connector):
    def describe(self) -> Descriptor:
        return Descriptor(
            name="{{name}}",
            version="0.1.0",
            kind=Kind.SOURCE,
            description="{{name}}: emits a few records (made by wasm-connect new).",
            config_defs=[ConfigDef("topic", "The topic the records are written to.", required=True)],
        )


class Task(SourceTask):
    def __init__(self, config: Config, host) -> None:
        super().__init__(config, host)
        committed = host.committed_position("{{name}}")
        if committed is not None and not committed.isdigit():
            raise Fatal(f"committed position {committed!r} is not a count")
        self.next = int(committed) if committed is not None else 0

    def poll(self, out: BatchWriter, max_records: int, max_bytes: int) -> None:
        while self.next < RECORDS and out.count < max_records:
            value = f"record {self.next} from {{name}}"
            self.next += 1
            out.push(value, partition="{{name}}", position=str(self.next))


Connector = export_source(Plugin, Task)
