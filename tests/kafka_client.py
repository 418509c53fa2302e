"""Drives wasm-connect's JSON API with an unchanged Kafka Connect client library
(kafka-connect-py, from PyPI), the way a new user would. Usage: kafka_client.py URL WORKDIR"""

import sys
import time

from kafka_connect import KafkaConnect


def wait_for(what, check, seconds=30):
    deadline = time.time() + seconds
    while not check():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def main(url, workdir):
    client = KafkaConnect(url=url)
    assert client.get_cluster_info()["version"], "no version in GET /"

    config = {
        "name": "py-source",
        "config": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
            "file": f"{workdir}/in.txt",
            "topic": "py",
        },
    }
    created = client.create_connector(config)
    assert created["name"] == "py-source", created
    assert "py-source" in client.list_connectors()
    assert client.get_connector("py-source")["type"] == "source"
    assert client.get_connector_config("py-source")["topic"] == "py"

    def state():
        return client.get_connector_status("py-source")["tasks"][0]["state"]

    wait_for("RUNNING", lambda: state() == "RUNNING")
    client.pause_connector("py-source")
    wait_for("PAUSED", lambda: state() == "PAUSED")
    client.resume_connector("py-source")
    wait_for("RUNNING after resume", lambda: state() == "RUNNING")
    restarted = client.restart_connector("py-source", include_tasks=True)
    assert restarted["tasks"][0]["state"] == "RESTARTING", restarted
    wait_for("RUNNING after restart", lambda: state() == "RUNNING")
    expanded = client.list_connectors(expand="status")
    assert expanded["py-source"]["status"]["connector"]["state"] == "RUNNING", expanded
    client.delete_connector("py-source")
    assert "py-source" not in client.list_connectors()
    print("kafka-connect-py: list, create, status, pause, resume, restart, delete: ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
