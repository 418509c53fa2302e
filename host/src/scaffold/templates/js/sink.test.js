// Runs the task under Node: `npm test` (node --test).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Task } from "./app.js";
import { BatchReader, BatchWriter, Config } from "./sdk/wasm-connect.js";

test("logs and counts what it is given", () => {
  const lines = [];
  const host = { committedPosition: () => null, log: (_level, message) => lines.push(message) };
  const task = new Task(new Config(), host);
  const batch = new BatchWriter();
  for (const value of ["a", "b", "c"]) batch.push(value);
  task.put("topic", 7n, new BatchReader(batch.frames(), batch.count));
  assert.equal(task.flush()[0].position, "3");
  assert.deepEqual(lines, ["topic@7: a", "topic@8: b", "topic@9: c"]);
});
