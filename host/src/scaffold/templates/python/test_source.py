"""Runs the task in plain Python: `python3 -m unittest`."""

import unittest

from app import RECORDS, Task
from wasm_connect import BatchReader, BatchWriter, Config


class NewHost:
    """A host with nothing committed yet."""

    def committed_position(self, partition):
        return None


class TaskTest(unittest.TestCase):
    def test_emits_its_records_once(self):
        task = Task(Config(), NewHost())
        out = BatchWriter()
        task.poll(out, 100, 1 << 20)
        records = list(BatchReader(out.frames(), out.count))
        self.assertEqual(len(records), RECORDS)
        self.assertEqual(records[0].value, b"record 0 from {{name}}")
        out.clear()
        task.poll(out, 100, 1 << 20)
        self.assertEqual(out.count, 0)


if __name__ == "__main__":
    unittest.main()
