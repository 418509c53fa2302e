// {{name}}: a sink connector made by `wasm-connect new`. It logs each record it is given
// and commits their count; replace `put` and `flush` with writing your system.
import { Connector, Fatal, Kind, LogLevel, SinkTask, configDef, text } from "./sdk/wasm-connect.js";

class Plugin extends Connector {
  describe() {
    return {
      name: "{{name}}",
      version: "0.1.0",
      kind: Kind.SINK,
      description: "{{name}}: logs the records it consumes (made by wasm-connect new).",
      configDefs: [configDef("topics", "Comma-separated topics to consume.", { required: true })],
    };
  }
}

export class Task extends SinkTask {
  constructor(config, host) {
    super(config, host);
    const committed = host.committedPosition("{{name}}");
    if (committed !== null && !/^\d+$/.test(committed)) {
      throw new Fatal(`committed position ${committed} is not a count`);
    }
    this.count = committed === null ? 0 : Number(committed);
  }

  put(topic, firstOffset, records) {
    let offset = firstOffset;
    for (const record of records) {
      this.host.log(LogLevel.INFO, `${topic}@${offset}: ${text(record.value)}`);
      offset += 1n;
      this.count++;
    }
  }

  flush() {
    return [{ partition: "{{name}}", position: String(this.count) }];
  }
}

export default { connector: Plugin, task: Task };
