"""python-csv-source: a CSV file with a header row becomes one JSON record per row.

The record value is a JSON object keyed by the header's column names; the record key is the
value of the column named by `key.field`, when set. The position committed for the file is
the byte offset just after the last row delivered, so a restart resumes exactly there. Rows
end at a newline (quoted fields may not span lines); a last row without one waits for it.
"""

import csv
import json

from wasm_connect import (
    BatchWriter, Config, ConfigDef, ConfigProblem, Connector, Descriptor, Fatal, Kind,
    PathAccess, Retriable, SourceTask, export_source,
)

FILE_KEYS = ("filename", "file")
READ_CHUNK = 256 * 1024


class CsvSource(Connector):
    def describe(self) -> Descriptor:
        return Descriptor(
            name="python-csv-source",
            version="0.1.0",
            kind=Kind.SOURCE,
            description="Reads a CSV file with a header row: one JSON record per row (Python).",
            aliases=["com.github.jcustenborder.kafka.connect.spooldir.SpoolDirCsvSourceConnector"],
            config_defs=[
                ConfigDef("filename", "The CSV file to read (Kafka spelling: `file`).",
                          path=PathAccess.READ_FILE),
                ConfigDef("file", "Kafka spelling of `filename`.", path=PathAccess.READ_FILE),
                ConfigDef("topic", "The topic the rows are written to.", required=True),
                ConfigDef("key.field", "Column whose value becomes the record key."),
            ],
        )

    def validate(self, config: Config):
        if not config.get_any(*FILE_KEYS):
            return [ConfigProblem("filename", "Request config key: filename")]
        return []


class CsvTask(SourceTask):
    def __init__(self, config: Config, host) -> None:
        super().__init__(config, host)
        self.path = config.get_any(*FILE_KEYS) or ""
        self.key_field = config.get("key.field")
        committed = host.committed_position(self.path)
        try:
            self.position = int(committed) if committed is not None else 0
        except ValueError:
            raise Fatal(f"committed position {committed!r} of {self.path} is not a byte offset")
        self.header = None

    def _read_header(self, f) -> None:
        line = f.readline()
        if not line.endswith(b"\n"):
            raise Retriable(f"{self.path} has no complete header row yet")
        self.header = next(csv.reader([line.decode()]))
        self.position = max(self.position, len(line))

    def poll(self, out: BatchWriter, max_records: int, max_bytes: int) -> None:
        try:
            with open(self.path, "rb") as f:
                if self.header is None:
                    self._read_header(f)
                f.seek(self.position)
                data = f.read(READ_CHUNK)
                # A row longer than a chunk: read on until its newline (or the end).
                while b"\n" not in data:
                    more = f.read(READ_CHUNK)
                    if not more:
                        break
                    data += more
        except OSError as e:
            raise Retriable(f"cannot read {self.path}: {e}")
        start = 0
        while out.count < max_records and out.byte_len < max_bytes:
            end = data.find(b"\n", start)
            if end < 0:
                break
            line = data[start:end].rstrip(b"\r")
            start = end + 1
            position = str(self.position + start)
            if not line:
                continue
            row = next(csv.reader([line.decode(errors="replace")]))
            value = dict(zip(self.header, row))
            key = value.get(self.key_field) if self.key_field else None
            out.push(json.dumps(value).encode(), key=key, partition=self.path, position=position)
        self.position += start


Connector = export_source(CsvSource, CsvTask)
