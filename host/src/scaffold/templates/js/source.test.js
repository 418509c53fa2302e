// Runs the task under Node: `npm test` (node --test).
import { test } from "node:test";
import assert from "node:assert/strict";
import { RECORDS, Task } from "./app.js";
import { BatchReader, BatchWriter, Config, text } from "./sdk/wasm-connect.js";

/** A host with nothing committed yet. */
const newHost = { committedPosition: () => null };

test("emits its records once", () => {
  const task = new Task(new Config(), newHost);
  const out = new BatchWriter();
  task.poll(out, 100, 1 << 20);
  const records = [...new BatchReader(out.frames(), out.count)];
  assert.equal(records.length, RECORDS);
  assert.equal(text(records[0].value), "record 0 from {{name}}");
  out.clear();
  task.poll(out, 100, 1 << 20);
  assert.equal(out.count, 0);
});
