"""The frame codec of the Python SDK, in plain CPython:
`python3 -m unittest discover -s plugins-src/sdk-python`."""

import unittest

from wasm_connect import BatchReader, BatchWriter, FrameError


class BatchTest(unittest.TestCase):
    def test_every_field_round_trips_past_the_preallocated_capacity(self):
        out = BatchWriter(16)
        out.push("värde ✓", key=b"k", timestamp=1_700_000_000_123, headers=[("h", b"v")],
                 topic="t", partition="p", position="42")
        out.push(b"\x00\xff")
        first, second = list(BatchReader(out.frames(), out.count))
        self.assertEqual(first.value, "värde ✓".encode())
        self.assertEqual(first.key, b"k")
        self.assertEqual(first.timestamp, 1_700_000_000_123)
        self.assertEqual(first.headers, [("h", b"v")])
        self.assertEqual((first.topic, first.partition, first.position), ("t", "p", "42"))
        self.assertIsNone(second.key)
        self.assertEqual(second.value, b"\x00\xff")

    def test_a_truncated_or_inconsistent_batch_is_a_frame_error(self):
        out = BatchWriter()
        out.push(b"value", partition="p")
        frames = out.frames()
        for cut in range(len(frames)):
            with self.assertRaises(FrameError):
                list(BatchReader(frames[:cut], 1))
        with self.assertRaises(FrameError):
            list(BatchReader(frames, 2))

    def test_a_field_too_long_for_its_prefix_is_refused(self):
        with self.assertRaises(FrameError):
            BatchWriter().push(b"v", topic="t" * 70_000)


if __name__ == "__main__":
    unittest.main()
