// The frame codec and the glue of the JS SDK, under Node: `npm test` in plugins-src/sdk-js.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BatchReader, BatchWriter, Fatal, FrameError, Retriable, exportConnector, text, utf8 } from "../wasm-connect.js";

test("every field round-trips, past the preallocated capacity", () => {
  const out = new BatchWriter(16);
  out.push("värde ✓", { key: "k", timestamp: 1700000000123, headers: [["h", "v"]], topic: "t", partition: "p", position: "42" });
  out.push(new Uint8Array([0, 255]));
  const [first, second] = [...new BatchReader(out.frames(), out.count)];
  assert.equal(text(first.value), "värde ✓");
  assert.equal(text(first.key), "k");
  assert.equal(first.timestamp, 1700000000123n);
  assert.deepEqual(first.headers.map(([n, v]) => [n, text(v)]), [["h", "v"]]);
  assert.deepEqual([first.topic, first.partition, first.position], ["t", "p", "42"]);
  assert.equal(second.key, null);
  assert.deepEqual([...second.value], [0, 255]);
});

test("the UTF-8 codec agrees with Node's", () => {
  const sample = "a é € 😀 \u{10ffff}";
  assert.deepEqual(utf8(sample), new Uint8Array(Buffer.from(sample)));
  assert.equal(text(new Uint8Array(Buffer.from(sample))), sample);
});

test("a truncated or inconsistent batch is a FrameError, never a crash", () => {
  const out = new BatchWriter();
  out.push("value", { partition: "p" });
  const frames = out.frames();
  for (let cut = 0; cut < frames.length; cut++) {
    assert.throws(() => [...new BatchReader(frames.subarray(0, cut), 1)], FrameError);
  }
  assert.throws(() => [...new BatchReader(frames, 2)], FrameError);
});

test("exceptions become the WIT task-error: Retriable, Fatal, anything else fatal", () => {
  const errors = [new Retriable("busy"), new Fatal("broken"), new TypeError("oops")];
  class Task {
    constructor() {}
    poll() {
      throw errors.shift();
    }
  }
  const glue = exportConnector({ connector: class {}, task: Task }, { host: {}, preopens: {} });
  const task = glue.source.SourceTask.start([]);
  const caught = () => {
    try {
      task.poll(10, 1000);
    } catch (e) {
      return e;
    }
  };
  assert.deepEqual(caught(), { tag: "retriable", val: "busy" });
  assert.deepEqual(caught(), { tag: "fatal", val: "broken" });
  const other = caught();
  assert.equal(other.tag, "fatal");
  assert.match(other.val, /^TypeError: oops/);
});
