// js-source: a JSON Lines file (one JSON document per line) becomes one record per line.
//
// Each line is checked to be JSON and sent as it is; the record key is the value of the
// field named by `key.field`, when set. The position committed for the file is the byte
// offset just after the last line delivered, so a restart resumes exactly there. A last
// line without a newline waits for it.
import {
  Connector, Fatal, Kind, PathAccess, SourceTask, configDef, files, text,
} from "../../sdk-js/wasm-connect.js";

const FILE_KEYS = ["filename", "file"];
const READ_CHUNK = 256 * 1024;

class JsonlSource extends Connector {
  describe() {
    return {
      name: "js-source",
      version: "0.1.0",
      kind: Kind.SOURCE,
      description: "Reads a JSON Lines file: one record per line (JavaScript).",
      aliases: [],
      configDefs: [
        configDef("filename", "The JSON Lines file to read (Kafka spelling: `file`).", { path: PathAccess.READ_FILE }),
        configDef("file", "Kafka spelling of `filename`.", { path: PathAccess.READ_FILE }),
        configDef("topic", "The topic the lines are written to.", { required: true }),
        configDef("key.field", "Field whose value becomes the record key."),
      ],
    };
  }

  validate(config) {
    return config.getAny(...FILE_KEYS) ? [] : [{ key: "filename", message: "Request config key: filename" }];
  }
}

class JsonlTask extends SourceTask {
  constructor(config, host) {
    super(config, host);
    this.path = config.getAny(...FILE_KEYS);
    this.keyField = config.get("key.field");
    const committed = host.committedPosition(this.path);
    if (committed !== null && !/^\d+$/.test(committed)) {
      throw new Fatal(`committed position ${committed} of ${this.path} is not a byte offset`);
    }
    this.position = committed === null ? 0n : BigInt(committed);
  }

  poll(out, maxRecords, maxBytes) {
    let data = files.read(this.path, this.position, READ_CHUNK);
    // A line longer than a chunk: read on until its newline (or the end).
    while (data.indexOf(10) < 0) {
      const more = files.read(this.path, this.position + BigInt(data.length), READ_CHUNK);
      if (more.length === 0) break;
      const grown = new Uint8Array(data.length + more.length);
      grown.set(data);
      grown.set(more, data.length);
      data = grown;
    }
    let start = 0;
    while (out.count < maxRecords && out.byteLength < maxBytes) {
      const end = data.indexOf(10, start);
      if (end < 0) break;
      const line = data.subarray(start, end);
      start = end + 1;
      const position = String(this.position + BigInt(start));
      if (line.length === 0) continue;
      let key = null;
      if (this.keyField) {
        try {
          const field = JSON.parse(text(line))[this.keyField];
          key = field === undefined ? null : String(field);
        } catch (e) {
          throw new Fatal(`${this.path} at byte ${position}: not JSON (${e.message})`);
        }
      }
      out.push(line, { key, partition: this.path, position });
    }
    this.position += BigInt(start);
  }
}

export default { connector: JsonlSource, task: JsonlTask };
