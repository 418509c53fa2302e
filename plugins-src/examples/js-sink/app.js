// js-sink: writes each record's value as one line of a text file, optionally prefixed with
// its topic offset (`include.offset`).
//
// `flush` returns the file's length as the position; on start the file is cut to the
// committed length, so lines written after the last commit (which the host offers again)
// are not duplicated.
import {
  Connector, Kind, PathAccess, SinkTask, ValueType, configDef, files, utf8,
} from "../../sdk-js/wasm-connect.js";

const FILE_KEYS = ["filename", "file"];

class LineSink extends Connector {
  describe() {
    return {
      name: "js-sink",
      version: "0.1.0",
      kind: Kind.SINK,
      description: "Writes record values as lines of a text file (JavaScript).",
      aliases: [],
      configDefs: [
        configDef("filename", "The file to write (Kafka spelling: `file`).", { path: PathAccess.WRITE_FILE }),
        configDef("file", "Kafka spelling of `filename`.", { path: PathAccess.WRITE_FILE }),
        configDef("topics", "Comma-separated topics to consume."),
        configDef("topicNames", "RocketMQ spelling of `topics`."),
        configDef("include.offset", "Start each line with the record's topic offset and a space.", {
          valueType: ValueType.BOOLEAN,
          default: "false",
        }),
      ],
    };
  }

  validate(config) {
    const problems = [];
    if (!config.getAny(...FILE_KEYS)) problems.push({ key: "filename", message: "Request config key: filename" });
    if (!config.getAny("topics", "topicNames")) problems.push({ key: "topics", message: "Request config key: topics" });
    return problems;
  }
}

class LineTask extends SinkTask {
  constructor(config, host) {
    super(config, host);
    this.path = config.getAny(...FILE_KEYS);
    this.withOffset = config.get("include.offset") === "true";
    const committed = host.committedPosition(this.path);
    this.length = committed === null ? files.size(this.path) : BigInt(committed);
    files.truncate(this.path, this.length);
  }

  put(_topic, firstOffset, records) {
    const chunks = [];
    let offset = firstOffset;
    for (const record of records) {
      if (this.withOffset) chunks.push(utf8(`${offset} `));
      chunks.push(record.value, NEWLINE);
      offset += 1n;
    }
    this.length = files.writeAt(this.path, this.length, concat(chunks));
  }

  flush() {
    return [{ partition: this.path, position: String(this.length) }];
  }
}

const NEWLINE = Uint8Array.of(10);

function concat(chunks) {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

export default { connector: LineSink, task: LineTask };
