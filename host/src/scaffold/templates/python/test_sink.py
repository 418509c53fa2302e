"""Runs the task in plain Python: `python3 -m unittest`."""

import unittest

from app import Task
from wasm_connect import BatchReader, BatchWriter, Config


class NewHost:
    """A host with nothing committed yet, keeping what the task logs."""

    def __init__(self):
        self.lines = []

    def committed_position(self, partition):
        return None

    def log(self, level, message):
        self.lines.append(message)


class TaskTest(unittest.TestCase):
    def test_logs_and_counts_what_it_is_given(self):
        host = NewHost()
        task = Task(Config(), host)
        batch = BatchWriter()
        for value in ("a", "b", "c"):
            batch.push(value)
        task.put("topic", 7, BatchReader(batch.frames(), batch.count))
        self.assertEqual(task.flush()[0].position, "3")
        self.assertEqual(host.lines, ["topic@7: a", "topic@8: b", "topic@9: c"])


if __name__ == "__main__":
    unittest.main()
