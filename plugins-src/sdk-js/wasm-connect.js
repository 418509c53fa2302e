// wasm-connect connector SDK for JavaScript.
//
// Write a connector as a plain ES module: subclass `Connector` and `SourceTask` (or
// `SinkTask`) and export them as the module's default:
//
//     export default { connector: MyConnector, task: MyTask };
//
// `build.sh` (beside this file) wraps the module in the WIT glue and builds a QuickJS
// component with componentize-qjs (pinned in package.json) for the `source-connector` or
// `sink-connector` world. This module imports no WIT interface itself, so the same code also
// runs under Node, where tests drive the author's classes directly.
//
// The shape is the Rust and Python SDKs': a `BatchWriter` writing the frame layout of
// wit/connector.wit into one preallocated `Uint8Array`, a `BatchReader`, a `Host` (log,
// committed position), errors as exceptions (`Retriable`, `Fatal`) that the glue maps to
// `task-error`, `BigInt` offsets, and `files`, a small file API over WASI (QuickJS has none).

export const Kind = Object.freeze({ SOURCE: "source", SINK: "sink" });
export const ValueType = Object.freeze({ TEXT: "text", INTEGER: "integer", BOOLEAN: "boolean", LIST: "list" });
export const PathAccess = Object.freeze({ READ_FILE: "read-file", WRITE_FILE: "write-file" });
export const LogLevel = Object.freeze({ TRACE: "trace", DEBUG: "debug", INFO: "info", WARN: "warn", ERROR: "error" });

/** A passing condition: the host keeps the task and calls again later. */
export class Retriable extends Error {}
/** The task cannot go on: the host marks it FAILED with this message. */
export class Fatal extends Error {}
/** A malformed batch, or a record field too long for the frame format. */
export class FrameError extends Fatal {}

/** A connector or task config: every value a string. */
export class Config extends Map {
  /** The value of the first of `keys` that is set (for keys with several spellings). */
  getAny(...keys) {
    for (const key of keys) if (this.has(key)) return this.get(key);
    return undefined;
  }
  pairs() {
    return [...this.entries()];
  }
}

/** One config key: `{name, description, required, valueType, default, secret, path}`. */
export function configDef(name, description, options = {}) {
  return {
    name,
    description,
    required: options.required ?? false,
    valueType: options.valueType ?? ValueType.TEXT,
    default: options.default,
    secret: options.secret ?? false,
    path: options.path,
  };
}

const NO_KEY = 0xffffffff;

/** UTF-8 bytes of `text` (QuickJS has no TextEncoder). */
export function utf8(text) {
  if (text instanceof Uint8Array) return text;
  const out = [];
  for (let i = 0; i < text.length; i++) {
    let c = text.codePointAt(i);
    if (c > 0xffff) i++;
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return Uint8Array.from(out);
}

/** Text of UTF-8 `bytes` (QuickJS has no TextDecoder); malformed sequences become U+FFFD. */
export function text(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    const n = b < 0x80 ? 1 : b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 0;
    if (n === 0 || i + n > bytes.length) {
      out += "\ufffd";
      i++;
      continue;
    }
    let c = n === 1 ? b : b & (0xff >> (n + 1));
    for (let k = 1; k < n; k++) c = (c << 6) | (bytes[i + k] & 63);
    out += String.fromCodePoint(c);
    i += n;
  }
  return out;
}

/** Writes records in the frame layout into one preallocated buffer, grown by doubling. */
export class BatchWriter {
  constructor(capacity = 64 * 1024) {
    this.buf = new Uint8Array(capacity);
    this.view = new DataView(this.buf.buffer);
    this.byteLength = 0;
    this.count = 0;
  }

  clear() {
    this.byteLength = 0;
    this.count = 0;
  }

  /** Appends one record; strings are UTF-8 encoded. `timestamp` is ms (0: the host stamps). */
  push(value, { key = null, timestamp = 0, headers = [], topic = "", partition = "", position = "" } = {}) {
    const v = utf8(value);
    const k = key === null || key === undefined ? null : utf8(key);
    const t = short(topic, "topic"), p = short(partition, "partition"), q = short(position, "position");
    const hs = headers.map(([name, hv]) => [short(name, "header name"), utf8(hv)]);
    let body = 8 + 4 + (k ? k.length : 0) + 4 + v.length + 2 + 6 + t.length + p.length + q.length;
    for (const [name, hv] of hs) body += 2 + name.length + 4 + hv.length;
    let at = this.reserve(4 + body);
    const view = this.view;
    view.setUint32(at, body, true);
    view.setBigInt64(at + 4, BigInt(timestamp), true);
    at += 12;
    if (k === null) {
      view.setUint32(at, NO_KEY, true);
      at += 4;
    } else at = this.put32(at, k);
    at = this.put32(at, v);
    view.setUint16(at, hs.length, true);
    at += 2;
    for (const [name, hv] of hs) at = this.put32(this.put16(at, name), hv);
    this.put16(this.put16(this.put16(at, t), p), q);
    this.count++;
  }

  /** The frames written so far (a copy the host takes). */
  frames() {
    return this.buf.slice(0, this.byteLength);
  }

  reserve(size) {
    const at = this.byteLength;
    const need = at + size;
    if (need > this.buf.length) {
      const grown = new Uint8Array(Math.max(need, 2 * this.buf.length));
      grown.set(this.buf.subarray(0, at));
      this.buf = grown;
      this.view = new DataView(grown.buffer);
    }
    this.byteLength = need;
    return at;
  }

  put32(at, bytes) {
    this.view.setUint32(at, bytes.length, true);
    this.buf.set(bytes, at + 4);
    return at + 4 + bytes.length;
  }

  put16(at, bytes) {
    this.view.setUint16(at, bytes.length, true);
    this.buf.set(bytes, at + 2);
    return at + 2 + bytes.length;
  }
}

function short(value, what) {
  const bytes = utf8(value);
  if (bytes.length > 0xffff) throw new FrameError(`${what} of ${bytes.length} bytes is too long for the frame format (at most 65535)`);
  return bytes;
}

/** Reads the records of a batch: `{value, key, timestamp (BigInt), headers, topic, partition, position}`. */
export class BatchReader {
  constructor(frames, count) {
    this.frames = frames;
    this.count = count;
  }

  *[Symbol.iterator]() {
    const buf = this.frames;
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    let at = 0;
    for (let index = 0; index < this.count; index++) {
      const fail = (why) => new FrameError(`record ${index} ${why}`);
      const need = (n) => {
        if (at + n > buf.length) throw fail("is cut off by the end of the batch");
      };
      const take = (n) => {
        need(n);
        const bytes = buf.subarray(at, at + n);
        at += n;
        return bytes;
      };
      need(4);
      const end = at + 4 + view.getUint32(at, true);
      at += 4;
      need(12);
      const timestamp = view.getBigInt64(at, true);
      const keyLen = view.getUint32(at + 8, true);
      at += 12;
      const key = keyLen === NO_KEY ? null : take(keyLen);
      need(4);
      const valueLen = view.getUint32(at, true);
      at += 4;
      const value = take(valueLen);
      need(2);
      const headerCount = view.getUint16(at, true);
      at += 2;
      const str16 = () => {
        need(2);
        const n = view.getUint16(at, true);
        at += 2;
        return text(take(n));
      };
      const headers = [];
      for (let h = 0; h < headerCount; h++) {
        const name = str16();
        need(4);
        const n = view.getUint32(at, true);
        at += 4;
        headers.push([name, take(n)]);
      }
      const topic = str16(), partition = str16(), position = str16();
      if (at !== end) throw fail("declared length does not match its fields");
      yield { value, key, timestamp, headers, topic, partition, position };
    }
  }
}

/** What the host offers a task (the WIT `host` interface); the glue supplies `wit`. */
export class Host {
  constructor(wit) {
    this.wit = wit;
  }
  log(level, message) {
    this.wit.log(level, message);
  }
  /** The last position the host durably committed for `partition`, or null. */
  committedPosition(partition) {
    return this.wit.committedPosition(partition) ?? null;
  }
  connectorName() {
    return this.wit.connectorName();
  }
  taskId() {
    return this.wit.taskId() ?? null;
  }
}

/** Connector-level behaviour: override `describe`; the others have defaults. */
export class Connector {
  describe() {
    throw new Error("a Connector must override describe()");
  }
  /** Problems beyond the `required` flags: a list of `{key, message}`; [] accepts. */
  validate(_config) {
    return [];
  }
  taskConfigs(config, _maxTasks) {
    return [config];
  }
}

/** One running source task: build it in `constructor(config, host)`. */
export class SourceTask {
  constructor(config, host) {
    this.config = config;
    this.host = host;
  }
  /** Push up to `maxRecords` records (about `maxBytes` bytes) into `out`; none means "nothing now". */
  poll(_out, _maxRecords, _maxBytes) {
    throw new Error("a SourceTask must override poll()");
  }
  commit(_positions) {}
  stop() {}
}

/** One running sink task: build it in `constructor(config, host)`. */
export class SinkTask {
  constructor(config, host) {
    this.config = config;
    this.host = host;
  }
  /** Write the records of `topic`; the first has offset `firstOffset` (a BigInt). */
  put(_topic, _firstOffset, _records) {
    throw new Error("a SinkTask must override put()");
  }
  /** Make everything put so far durable; returns `[{partition, position}]`. */
  flush() {
    return [];
  }
  stop() {}
}

/** Files over WASI: only under the directories the host granted (path-typed config keys). */
export const files = {
  wasi: null,

  /** Opens `path` (absolute) in the granted directory that holds it. */
  open(path, { create = false, write = false } = {}) {
    if (!this.wasi) throw new Fatal("files are only available inside the component");
    const { preopens } = this.wasi;
    for (const [dir, name] of preopens.getDirectories()) {
      const prefix = name.endsWith("/") ? name : name + "/";
      if (path.startsWith(prefix)) {
        try {
          return dir.openAt({ symlinkFollow: false }, path.slice(prefix.length), { create }, { read: true, write });
        } catch (e) {
          throw new Retriable(`cannot open ${path}: ${describeError(e)}`);
        }
      }
    }
    throw new Fatal(`${path} is not in a directory this task was granted: name it in a path-typed config key`);
  },

  /** Size of `path` in bytes (0 when it does not exist yet). */
  size(path) {
    let file;
    try {
      file = this.open(path);
    } catch (e) {
      if (e instanceof Retriable) return 0;
      throw e;
    }
    return BigInt(file.stat().size);
  },

  /** Up to `length` bytes of `path` from byte `offset` (a Uint8Array; empty at the end). */
  read(path, offset, length) {
    const file = this.open(path);
    try {
      const [bytes] = file.read(length, Number(offset));
      return bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes);
    } catch (e) {
      throw new Retriable(`cannot read ${path}: ${describeError(e)}`);
    }
  },

  /** Writes `bytes` at byte `offset` of `path`, creating it; returns the offset after them. */
  writeAt(path, offset, bytes) {
    const file = this.open(path, { create: true, write: true });
    let at = Number(offset);
    let rest = bytes;
    try {
      while (rest.length > 0) {
        const n = Number(file.write(rest, at));
        at += n;
        rest = rest.subarray(n);
      }
      file.syncData();
    } catch (e) {
      throw new Retriable(`cannot write ${path}: ${describeError(e)}`);
    }
    return BigInt(at);
  },

  /** Cuts `path` to `length` bytes, creating it when missing. */
  truncate(path, length) {
    const file = this.open(path, { create: true, write: true });
    try {
      file.setSize(Number(length));
    } catch (e) {
      throw new Retriable(`cannot truncate ${path}: ${describeError(e)}`);
    }
  },
};

function describeError(e) {
  if (e && typeof e === "object" && "payload" in e) return String(e.payload);
  if (e && typeof e === "object" && "val" in e) return String(e.val);
  return String(e && e.message ? e.message : e);
}

function message(e) {
  if (e instanceof Retriable || e instanceof Fatal) return e.message;
  const where = e && e.stack ? ` (${String(e.stack).split("\n").slice(0, 2).join(" ").trim()})` : "";
  return `${e && e.name ? e.name : "Error"}: ${e && e.message ? e.message : String(e)}${where}`;
}

/** The WIT `task-error` for an exception thrown by the author's task. */
function taskError(e) {
  return e instanceof Retriable ? { tag: "retriable", val: message(e) } : { tag: "fatal", val: message(e) };
}

function guarded(call) {
  try {
    return call();
  } catch (e) {
    throw taskError(e);
  }
}

/**
 * The WIT exports for `plugin` (`{connector, task}`): `{connector, source}` or
 * `{connector, sink}`, by the kind the connector describes. `wit` holds the imported
 * interfaces: `{host, preopens}`. Called by the entry module `build.sh` writes.
 */
export function exportConnector(plugin, wit) {
  files.wasi = { preopens: wit.preopens };
  const host = new Host(wit.host);
  const make = () => new plugin.connector();
  const connector = {
    describe() {
      const d = make().describe();
      return {
        name: d.name,
        version: d.version,
        kind: d.kind,
        description: d.description,
        aliases: d.aliases ?? [],
        configDefs: (d.configDefs ?? []).map((c) => ({
          name: c.name,
          description: c.description,
          valueType: c.valueType ?? ValueType.TEXT,
          required: c.required ?? false,
          defaultValue: c.default ?? null,
          secret: c.secret ?? false,
          path: c.path ?? null,
        })),
      };
    },
    validate(config) {
      const problems = make().validate(new Config(config));
      if (problems.length > 0) throw problems.map((p) => ({ key: p.key, message: p.message }));
    },
    taskConfigs(config, maxTasks) {
      try {
        return make().taskConfigs(new Config(config), maxTasks).map((c) => [...new Config(c).entries()]);
      } catch (e) {
        throw message(e);
      }
    },
  };
  const Task = plugin.task;
  class SourceTaskGlue {
    constructor(task) {
      this.task = task;
      this.out = new BatchWriter();
    }
    static start(config) {
      return new SourceTaskGlue(guarded(() => new Task(new Config(config), host)));
    }
    poll(maxRecords, maxBytes) {
      const out = this.out;
      out.clear();
      guarded(() => this.task.poll(out, maxRecords, maxBytes));
      return { count: out.count, frames: out.frames() };
    }
    commit(positions) {
      this.task.commit(positions);
    }
    stop() {
      this.task.stop();
    }
  }
  class SinkTaskGlue {
    constructor(task) {
      this.task = task;
    }
    static start(config) {
      return new SinkTaskGlue(guarded(() => new Task(new Config(config), host)));
    }
    put(topic, firstOffset, records) {
      guarded(() => this.task.put(topic, BigInt(firstOffset), new BatchReader(records.frames, records.count)));
    }
    flush() {
      return guarded(() => this.task.flush()).map((p) => ({ partition: p.partition, position: String(p.position) }));
    }
    stop() {
      this.task.stop();
    }
  }
  return { connector, source: { SourceTask: SourceTaskGlue }, sink: { SinkTask: SinkTaskGlue } };
}
