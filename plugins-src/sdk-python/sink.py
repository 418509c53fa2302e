"""componentize-py looks for the `sink-task` resource class in a module named after its
interface (`sink`): this module is that class, delegating to the author's `SinkTask`."""

from wasm_connect import BatchReader, Kind, _glue


class SinkTask:
    def __init__(self, task):
        self._task = task

    @classmethod
    def start(cls, config):
        try:
            return cls(_glue.new_task(Kind.SINK, config))
        except Exception as e:  # noqa: BLE001 - every failure becomes the WIT error
            raise _glue.task_error(e)

    def put(self, topic, first_offset, records):
        try:
            self._task.put(topic, first_offset, BatchReader(records.frames, records.count))
        except Exception as e:  # noqa: BLE001
            raise _glue.task_error(e)

    def flush(self):
        import wit_world.imports.types as types
        try:
            positions = self._task.flush()
        except Exception as e:  # noqa: BLE001
            raise _glue.task_error(e)
        return [types.Position(partition=p.partition, position=p.position) for p in positions]

    def stop(self):
        self._task.stop()
