"""componentize-py looks for the `source-task` resource class in a module named after its
interface (`source`): this module is that class, delegating to the author's `SourceTask`."""

from wasm_connect import BatchWriter, Kind, Position, _glue


class SourceTask:
    def __init__(self, task):
        self._task = task
        self._out = BatchWriter()

    @classmethod
    def start(cls, config):
        try:
            return cls(_glue.new_task(Kind.SOURCE, config))
        except Exception as e:  # noqa: BLE001 - every failure becomes the WIT error
            raise _glue.task_error(e)

    def poll(self, max_records, max_bytes):
        import wit_world.imports.types as types
        out = self._out
        out.clear()
        try:
            self._task.poll(out, max_records, max_bytes)
        except Exception as e:  # noqa: BLE001
            raise _glue.task_error(e)
        return types.RecordBatch(count=out.count, frames=out.frames())

    def commit(self, positions):
        self._task.commit([Position(p.partition, p.position) for p in positions])

    def stop(self):
        self._task.stop()
