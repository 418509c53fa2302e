// {{name}}: a source connector made by `wasm-connect new`. It emits a few records with its
// name in them, then nothing; replace `poll` with reading your system.
import { Connector, Fatal, Kind, SourceTask, configDef } from "./sdk/wasm-connect.js";

export const RECORDS = 5;

class Plugin extends Connector {
  describe() {
    return {
      name: "{{name}}",
      version: "0.1.0",
      kind: Kind.SOURCE,
      description: "{{name}}: emits a few records (made by wasm-connect new).",
      configDefs: [configDef("topic", "The topic the records are written to.", { required: true })],
    };
  }
}

export class Task extends SourceTask {
  constructor(config, host) {
    super(config, host);
    const committed = host.committedPosition("{{name}}");
    if (committed !== null && !/^\d+$/.test(committed)) {
      throw new Fatal(`committed position ${committed} is not a count`);
    }
    this.next = committed === null ? 0 : Number(committed);
  }

  poll(out, maxRecords, _maxBytes) {
    while (this.next < RECORDS && out.count < maxRecords) {
      const value = `record ${this.next} from {{name}}`;
      this.next++;
      out.push(value, { partition: "{{name}}", position: String(this.next) });
    }
  }
}

export default { connector: Plugin, task: Task };
