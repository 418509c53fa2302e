//! The PostgreSQL connectors against a real server (`initdb` in a temp dir, a free loopback
//! port, SCRAM passwords) through a real `wasm-connect` process: table → postgres-source →
//! topic → postgres-sink → table arrives identical, updates included; a `kill -9` mid-stream
//! neither loses nor duplicates a row; a wrong password fails the task with the server's
//! reason and the password appears in no answer; postgres-cdc replicates inserts, updates
//! and deletes into another table through the sink, answers keepalives while idle, and
//! delivers every change exactly once across a `kill -9`; with `snapshot.mode=initial` it
//! first reads the existing rows (once, as of the slot's creation) and then streams.

mod common;

use std::time::Duration;

use common::postgres::{Postgres, PASSWORD};
use common::{
    bundled_plugins, json_create, json_get, json_send, read_written_lines, wait_for, Host,
    Workspace,
};
use serde_json::{json, Value};

/// The PostgreSQL connector plugins (file names without `.wasm`).
const PLUGINS: [&str; 3] = ["postgres-source", "postgres-sink", "postgres-cdc"];

/// A workspace whose plugin dir also holds the PostgreSQL connectors.
fn workspace() -> Workspace {
    let ws = Workspace::new();
    for name in PLUGINS {
        let name = format!("{name}.wasm");
        std::fs::copy(bundled_plugins().join(&name), ws.plugin_dir().join(&name))
            .unwrap_or_else(|e| panic!("copy {name} (run scripts/build-plugins.sh): {e}"));
    }
    ws
}

/// The source table: every kind of column the server must map to JSON and back.
const SOURCE_TABLE: &str = "CREATE TABLE src (
    id bigserial PRIMARY KEY,
    ts timestamp NOT NULL DEFAULT clock_timestamp(),
    name text,
    qty integer,
    price numeric(10,2),
    tags text[],
    meta jsonb,
    note text)";

/// `n` more rows: quotes, commas, unicode, NULLs and nested JSON included.
fn insert_rows(pg: &Postgres, n: usize) {
    pg.sql(&format!(
        "INSERT INTO src (name, qty, price, tags, meta, note)
         SELECT 'row ' || g || ' \"quoted\", ünïcode ✓', g, g * 1.25, ARRAY['a', 'b,' || g],
                jsonb_build_object('g', g, 'nested', jsonb_build_array(g, 'x')),
                CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END
         FROM generate_series(1, {n}) g"
    ));
}

fn source_config(pg: &Postgres) -> Value {
    json!({
        "connector.class": "io.confluent.connect.jdbc.JdbcSourceConnector",
        "connection.url": pg.jdbc_url(),
        "connection.user": "postgres",
        "connection.password": PASSWORD,
        "network.allow": pg.address(),
        "mode": "timestamp+incrementing",
        "incrementing.column.name": "id",
        "timestamp.column.name": "ts",
        "table.whitelist": "src",
        "topic.prefix": "pg-",
        "poll.interval.ms": "200",
        "batch.max.rows": "500",
    })
}

fn sink_config(pg: &Postgres) -> Value {
    json!({
        "connector.class": "io.confluent.connect.jdbc.JdbcSinkConnector",
        "connection.url": pg.jdbc_url(),
        "connection.user": "postgres",
        "connection.password": PASSWORD,
        "network.allow": pg.address(),
        "topics": "pg-src",
        "table.name.format": "dst",
        "insert.mode": "upsert",
        "pk.mode": "record_value",
        "pk.fields": "id",
    })
}

/// A digest of a table's rows in id order.
fn digest(pg: &Postgres, table: &str) -> String {
    pg.sql(&format!(
        "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY id)), '') FROM {table} t"
    ))
}

/// Starts a host and waits until it has loaded the PostgreSQL connectors.
fn start_host(ws: &Workspace) -> Host {
    let host = ws.start();
    wait_for(
        Duration::from_secs(120),
        "the PostgreSQL plugins loaded",
        || {
            let plugins = json_get(&host, "/connector-plugins").body;
            PLUGINS
                .iter()
                .all(|p| plugins.contains(&format!("\"{p}\"")))
        },
    );
    host
}

fn create(host: &Host, name: &str, config: Value) {
    let answer = json_create(host, name, config);
    assert_eq!(answer.status, 201, "create {name}: {}", answer.body);
}

fn wait_same_tables(pg: &Postgres, host: &Host, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while digest(pg, "src") != digest(pg, "dst") {
        if std::time::Instant::now() > deadline {
            let statuses = json_get(host, "/connectors?expand=status").body;
            panic!(
                "timed out waiting for {what}: src {} dst {}; {statuses}",
                digest(pg, "src"),
                digest(pg, "dst")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn rows_flow_table_to_table_and_updates_are_upserted() {
    let pg = Postgres::start();
    pg.sql(SOURCE_TABLE);
    pg.sql("CREATE TABLE dst (LIKE src INCLUDING ALL)");
    insert_rows(&pg, 1200);
    let ws = workspace();
    let host = start_host(&ws);
    create(&host, "pg-in", source_config(&pg));
    create(&host, "pg-out", sink_config(&pg));
    wait_same_tables(&pg, &host, "the 1200 rows in dst");
    assert!(digest(&pg, "dst").starts_with("1200:"));

    // An update moves the timestamp: the source reads the row again, the sink upserts it.
    pg.sql("UPDATE src SET name = 'changed ' || id, qty = NULL, ts = clock_timestamp() WHERE id % 100 = 0");
    insert_rows(&pg, 30);
    wait_same_tables(&pg, &host, "the updated rows and 30 new ones in dst");
    assert_eq!(
        pg.sql("SELECT count(*) FROM dst WHERE name LIKE 'changed %'"),
        "12"
    );

    // The source's offset is the last row's timestamp and id, as JSON text.
    let offsets = json_get(&host, "/connectors/pg-in/offsets").json();
    let position = offsets["offsets"][0]["offset"]["position"]
        .as_str()
        .expect("position")
        .to_string();
    let last: Vec<String> = serde_json::from_str(&position).expect("position is a JSON array");
    assert_eq!(last[1], pg.sql("SELECT max(id) FROM src"));
}

#[test]
fn kill_9_mid_stream_loses_and_duplicates_no_row() {
    let pg = Postgres::start();
    pg.sql(SOURCE_TABLE);
    pg.sql("CREATE TABLE dst (LIKE src INCLUDING ALL)");
    insert_rows(&pg, 20_000);
    let ws = workspace();
    let out = ws.path("rows.jsonl");
    let mut source = source_config(&pg);
    source["batch.max.rows"] = json!("100"); // many small batches, so the kill lands mid-stream
    let file_sink = json!({"connector.class": "file-sink", "topics": "pg-src", "file": out.display().to_string()});
    let host = start_host(&ws);
    create(&host, "pg-in", source.clone());
    create(&host, "rows-file", file_sink);
    create(&host, "pg-out", sink_config(&pg));
    wait_for(Duration::from_secs(60), "some rows delivered", || {
        pg.sql("SELECT count(*) FROM dst")
            .parse::<u64>()
            .unwrap_or(0)
            > 500
    });
    host.kill9();
    let delivered_before = pg.sql("SELECT count(*) FROM dst");

    let host = start_host(&ws);
    wait_same_tables(&pg, &host, "every row in dst after the restart");
    wait_for(Duration::from_secs(60), "every row in the file", || {
        read_written_lines(&out).len() >= 20_000
    });
    let ids: Vec<u64> = read_written_lines(&out)
        .iter()
        .map(|line| {
            serde_json::from_str::<Value>(line).expect("a JSON row")["id"]
                .as_u64()
                .expect("id")
        })
        .collect();
    let expected: Vec<u64> = (1..=20_000).collect();
    assert_eq!(
        ids.len(),
        expected.len(),
        "the source delivered {} rows for 20000 (dst had {delivered_before} at the kill)",
        ids.len()
    );
    assert_eq!(ids, expected, "rows out of order or duplicated");
    drop(host);
}

#[test]
fn a_wrong_password_fails_with_the_servers_reason_and_is_never_shown() {
    let pg = Postgres::start();
    pg.sql("CREATE TABLE dst (id int PRIMARY KEY, name text)");
    let ws = workspace();
    let host = start_host(&ws);
    let wrong = "wrong-pw-7c1f";
    for (name, mut config) in [
        ("bad-sink", sink_config(&pg)),
        ("bad-source", source_config(&pg)),
    ] {
        config["connection.password"] = json!(wrong);
        create(&host, name, config);
        wait_for(Duration::from_secs(30), &format!("{name} FAILED"), || {
            json_get(&host, &format!("/connectors/{name}/status")).json()["tasks"][0]["state"]
                == "FAILED"
        });
        let status = json_get(&host, &format!("/connectors/{name}/status")).json();
        let trace = status["tasks"][0]["trace"].as_str().expect("trace");
        assert!(
            trace.contains("password authentication failed for user \"postgres\""),
            "{trace}"
        );
        assert!(trace.contains("28P01"), "{trace}");
        for path in [
            format!("/connectors/{name}"),
            format!("/connectors/{name}/config"),
            format!("/connectors/{name}/status"),
            format!("/connectors/{name}/tasks"),
            "/connectors?expand=status&expand=info".to_string(),
        ] {
            let body = json_get(&host, &path).body;
            assert!(
                !body.contains(wrong),
                "GET {path} shows the password: {body}"
            );
        }
        let legacy = host.get_ok(&format!("/connectors/{name}/config"));
        assert!(
            !legacy.contains(wrong),
            "legacy config shows the password: {legacy}"
        );
    }
    assert!(
        !host.log().contains(wrong),
        "the host log shows the password"
    );

    // Checks the sink makes before anything is stored.
    let mut bad = sink_config(&pg);
    bad["auto.create"] = json!("true");
    bad["insert.mode"] = json!("update");
    bad["pk.mode"] = json!("none");
    let answer = json_create(&host, "bad-keys", bad.clone());
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer.body.contains("need a primary key"),
        "{}",
        answer.body
    );
    bad["insert.mode"] = json!("insert");
    let answer = json_create(&host, "bad-keys", bad);
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer.body.contains("auto.create is not supported"),
        "{}",
        answer.body
    );
}

#[test]
fn a_missing_table_fails_the_sink_naming_the_table() {
    let pg = Postgres::start();
    pg.sql(SOURCE_TABLE);
    insert_rows(&pg, 3);
    let ws = workspace();
    let host = start_host(&ws);
    create(&host, "pg-in", source_config(&pg));
    create(&host, "pg-out", sink_config(&pg));
    wait_for(Duration::from_secs(30), "pg-out FAILED", || {
        json_get(&host, "/connectors/pg-out/status").json()["tasks"][0]["state"] == "FAILED"
    });
    let status = json_get(&host, "/connectors/pg-out/status").json();
    let trace = status["tasks"][0]["trace"].as_str().expect("trace");
    assert!(trace.contains("table dst does not exist"), "{trace}");
}

fn cdc_config(pg: &Postgres) -> Value {
    json!({
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": "127.0.0.1",
        "database.port": pg.port.to_string(),
        "database.user": "postgres",
        "database.password": PASSWORD,
        "database.dbname": "postgres",
        "network.allow": pg.address(),
        "topic.prefix": "cdc",
        "slot.name": "wc_slot",
        "publication.name": "wc_pub",
        "table.include.list": "public.src",
    })
}

/// The `op` of every change event in the file sink's output, with the row id.
fn events(lines: &[String]) -> Vec<(String, u64)> {
    lines
        .iter()
        .filter(|line| !line.is_empty()) // tombstones
        .map(|line| {
            let event: Value = serde_json::from_str(line).expect("a change event");
            assert!(
                event["source"]["lsn"].as_u64().is_some_and(|lsn| lsn > 0),
                "an event without its source.lsn: {line}"
            );
            let row = if event["op"] == "d" {
                &event["before"]
            } else {
                &event["after"]
            };
            (
                event["op"].as_str().expect("op").to_string(),
                row["id"].as_u64().expect("id"),
            )
        })
        .collect()
}

#[test]
fn cdc_replicates_changes_answers_keepalives_and_survives_kill_9_exactly_once() {
    let pg = Postgres::start();
    pg.sql(SOURCE_TABLE);
    pg.sql("CREATE TABLE dst (LIKE src INCLUDING ALL)");
    let ws = workspace();
    let out = ws.path("events.jsonl");
    let host = start_host(&ws);
    create(&host, "cdc", cdc_config(&pg));
    wait_for(Duration::from_secs(30), "the slot streaming", || {
        pg.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'wc_slot' AND active")
            == "1"
    });
    let mut sink = sink_config(&pg);
    sink["topics"] = json!("cdc.public.src");
    sink["pk.mode"] = json!("record_key");
    sink["delete.enabled"] = json!("true");
    sink.as_object_mut().unwrap().remove("pk.fields");
    create(&host, "pg-out", sink);
    create(
        &host,
        "events-file",
        json!({"connector.class": "file-sink", "topics": "cdc.public.src", "file": out.display().to_string()}),
    );

    insert_rows(&pg, 300);
    pg.sql("UPDATE src SET name = 'changed', tags = NULL WHERE id % 10 = 0");
    pg.sql("DELETE FROM src WHERE id % 7 = 0");
    wait_same_tables(
        &pg,
        &host,
        "inserts, updates and deletes replicated into dst",
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM dst WHERE name = 'changed'"),
        "26"
    );

    // Idle for longer than wal_sender_timeout: only answered keepalives keep the stream.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        !pg.log().contains("replication timeout"),
        "the server cut the stream off:\n{}",
        pg.log()
    );
    pg.sql("UPDATE src SET qty = -1 WHERE id = 1");
    wait_same_tables(&pg, &host, "a change after the idle period");

    // The server ends the replication connection: the task fails, the host restarts it, and
    // it streams again from the committed position.
    assert_eq!(
        pg.sql("SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots WHERE slot_name = 'wc_slot' AND active"),
        "1"
    );
    pg.sql("UPDATE src SET qty = -2 WHERE id = 2");
    wait_same_tables(
        &pg,
        &host,
        "a change after the replication connection was cut",
    );

    // A big transaction and many small ones, with a kill -9 in the middle of the stream.
    let before = pg.sql("SELECT pg_current_wal_lsn()");
    insert_rows(&pg, 20_000);
    for _ in 0..20 {
        insert_rows(&pg, 5);
    }
    wait_for(
        Duration::from_secs(60),
        "part of the big transaction delivered",
        || read_written_lines(&out).len() > 3_000,
    );
    host.kill9();
    let host = start_host(&ws);
    wait_same_tables(&pg, &host, "every change in dst after the restart");
    let total: u64 = pg.sql("SELECT max(id) FROM src").parse().expect("max id");
    wait_for(
        Duration::from_secs(60),
        "every insert event in the file",
        || {
            events(&read_written_lines(&out))
                .iter()
                .filter(|(op, _)| op == "c")
                .count() as u64
                >= total
        },
    );
    let mut created: Vec<u64> = events(&read_written_lines(&out))
        .into_iter()
        .filter(|(op, _)| op == "c")
        .map(|(_, id)| id)
        .collect();
    assert_eq!(
        created.len() as u64,
        total,
        "insert events: {} for {total} rows (duplicates or losses)",
        created.len()
    );
    created.sort_unstable();
    created.dedup();
    assert_eq!(
        created.len() as u64,
        total,
        "some rows were delivered twice"
    );
    // Once the host stored the changes, the slot lets go of the WAL behind them.
    let flushed = || {
        pg.sql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'wc_slot'")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pg.sql(&format!("SELECT '{}'::pg_lsn > '{before}'", flushed())) != "t" {
        assert!(
            std::time::Instant::now() < deadline,
            "the slot's flush position {} stayed at or before {before}; offsets {}; now {}",
            flushed(),
            json_get(&host, "/connectors/cdc/offsets").body,
            pg.sql("SELECT pg_current_wal_lsn()")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(host);
}

/// Every change event in a file sink's output (tombstones left out).
fn parsed_events(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_str(line).expect("a change event"))
        .collect()
}

#[test]
fn initial_snapshot_reads_existing_rows_once_then_streams_changes_and_never_skips_them() {
    const EXISTING: u64 = 3_000;
    let pg = Postgres::start();
    pg.sql(SOURCE_TABLE);
    insert_rows(&pg, EXISTING as usize);
    let ws = workspace();
    let out = ws.path("snapshot.jsonl");
    let out_never = ws.path("never.jsonl");
    let host = start_host(&ws);
    for (file, topic) in [(&out, "cdc.public.src"), (&out_never, "never.public.src")] {
        create(
            &host,
            &format!("file-{topic}"),
            json!({"connector.class": "file-sink", "topics": topic, "file": file.display().to_string()}),
        );
    }
    let mut never = cdc_config(&pg);
    never["topic.prefix"] = json!("never");
    never["slot.name"] = json!("wc_never");
    never["snapshot.mode"] = json!("never");
    create(&host, "cdc-never", never);
    let mut initial = cdc_config(&pg);
    initial["snapshot.mode"] = json!("initial");
    initial["snapshot.fetch.size"] = json!("100");
    // Created paused: the task starts (slot and snapshot taken) and reads nothing yet.
    let answer = json_send(
        &host,
        "POST",
        "/connectors",
        &json!({"name": "cdc", "config": initial, "initial_state": "PAUSED"}),
    );
    assert_eq!(answer.status, 201, "create cdc: {}", answer.body);
    let slot_ready = |slot: &str| {
        pg.sql(&format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' AND confirmed_flush_lsn IS NOT NULL")) == "1"
    };
    wait_for(Duration::from_secs(30), "both slots created", || {
        slot_ready("wc_slot") && slot_ready("wc_never")
    });

    // Changes after the snapshot was taken and before it is read: it must not show them.
    pg.sql("UPDATE src SET name = 'changed', qty = -qty WHERE id % 500 = 0");
    insert_rows(&pg, 20);
    pg.sql("DELETE FROM src WHERE id = 7");
    assert_eq!(
        pg.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'wasm-connect' AND backend_type = 'client backend' AND state = 'idle in transaction'"),
        "1",
        "the snapshot's transaction is open"
    );
    assert!(
        read_written_lines(&out).is_empty(),
        "nothing read while paused"
    );
    let resumed = json_send(&host, "PUT", "/connectors/cdc/resume", &Value::Null);
    assert_eq!(resumed.status, 202, "{}", resumed.body);
    let changes = 6 + 20 + 1;
    wait_for(
        Duration::from_secs(90),
        "the snapshot and the changes",
        || parsed_events(&read_written_lines(&out)).len() as u64 >= EXISTING + changes,
    );
    wait_for(
        Duration::from_secs(30),
        "the changes without snapshot",
        || parsed_events(&read_written_lines(&out_never)).len() as u64 >= changes,
    );
    std::thread::sleep(Duration::from_secs(1)); // anything extra would show up now

    let all = parsed_events(&read_written_lines(&out));
    assert_eq!(
        all.len() as u64,
        EXISTING + changes,
        "events: {} read + changes",
        all.len()
    );
    let (reads, streamed) = all.split_at(EXISTING as usize);
    let mut read_ids: Vec<u64> = reads
        .iter()
        .map(|e| {
            assert_eq!(e["op"], "r", "a change before the snapshot's end: {e}");
            assert_eq!(e["before"], Value::Null, "{e}");
            assert_eq!(e["source"]["snapshot"], "true", "{e}");
            assert!(e["source"]["lsn"].as_u64().is_some(), "{e}");
            // The snapshot shows the rows as they were when the slot was created.
            assert_ne!(e["after"]["name"], "changed", "{e}");
            e["after"]["id"].as_u64().expect("id")
        })
        .collect();
    read_ids.sort_unstable();
    assert_eq!(
        read_ids,
        (1..=EXISTING).collect::<Vec<_>>(),
        "each existing row read once"
    );
    let row_500 = reads
        .iter()
        .find(|e| e["after"]["id"] == 500)
        .expect("row 500 read");
    assert_eq!(row_500["after"]["qty"], 500, "{row_500}");
    assert_eq!(
        row_500["after"]["meta"]["g"], 500,
        "typed like the stream: {row_500}"
    );

    let mut expected: Vec<(String, u64)> = (1..=EXISTING / 500)
        .map(|n| ("u".to_string(), n * 500))
        .collect();
    expected.extend((EXISTING + 1..=EXISTING + 20).map(|id| ("c".to_string(), id)));
    expected.push(("d".to_string(), 7));
    assert_eq!(
        events(&read_written_lines(&out))[EXISTING as usize..],
        expected,
        "the changes, in order, once each"
    );
    assert!(streamed.iter().all(|e| e["source"]["snapshot"] == "false"));
    assert_eq!(
        events(&read_written_lines(&out_never)),
        expected,
        "snapshot.mode=never: only the changes"
    );

    // The last read event carries a streaming position: a restart does not take the
    // snapshot again, and the slot is the one the snapshot created.
    let position = json_get(&host, "/connectors/cdc/offsets").json()["offsets"][0]["offset"]
        ["position"]
        .as_str()
        .expect("position")
        .to_string();
    assert!(!position.starts_with("snapshot:"), "{position}");
    host.kill9();
    let host = start_host(&ws);
    insert_rows(&pg, 1);
    wait_for(
        Duration::from_secs(30),
        "the change after the restart",
        || parsed_events(&read_written_lines(&out)).len() as u64 > EXISTING + changes,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        events(&read_written_lines(&out))[(EXISTING + changes) as usize..],
        [("c".to_string(), EXISTING + 21)],
        "after the restart: only the new change"
    );
    drop(host);
}

#[test]
fn kill_9_mid_snapshot_takes_the_snapshot_again_on_a_new_slot() {
    const EXISTING: u64 = 20_000;
    let pg = Postgres::start();
    pg.sql(SOURCE_TABLE);
    insert_rows(&pg, EXISTING as usize);
    let ws = workspace();
    let out = ws.path("snapshot.jsonl");
    let host = start_host(&ws);
    create(
        &host,
        "events-file",
        json!({"connector.class": "file-sink", "topics": "cdc.public.src", "file": out.display().to_string()}),
    );
    let mut config = cdc_config(&pg);
    config["snapshot.mode"] = json!("initial");
    config["snapshot.fetch.size"] = json!("20"); // 1000 batches: the kill lands mid-snapshot
    create(&host, "cdc", config);
    wait_for(Duration::from_secs(60), "part of the snapshot out", || {
        read_written_lines(&out).len() > 300
    });
    host.kill9();
    let at_kill = read_written_lines(&out).len() as u64;
    assert!(at_kill < EXISTING, "the snapshot was over at the kill");

    // While the host is down: changes the new snapshot must show.
    pg.sql("UPDATE src SET name = 'changed' WHERE id % 1000 = 0");
    insert_rows(&pg, 5);
    let host = start_host(&ws);
    wait_for(Duration::from_secs(30), "the new slot", || {
        pg.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'wc_slot' AND confirmed_flush_lsn IS NOT NULL AND active") == "1"
    });
    insert_rows(&pg, 1);
    let rows = EXISTING + 5;
    wait_for(
        Duration::from_secs(90),
        "the new snapshot and the change",
        || events(&read_written_lines(&out)).last() == Some(&("c".to_string(), rows + 1)),
    );

    // The interrupted snapshot's reads, then a whole snapshot read at a later point, then
    // the change: each once.
    let all = parsed_events(&read_written_lines(&out));
    let lsn = |e: &Value| e["source"]["lsn"].as_u64();
    let first = lsn(&all[0]).expect("a snapshot read first");
    let interrupted = all.iter().take_while(|e| lsn(e) == Some(first)).count();
    assert!(
        (at_kill as usize..EXISTING as usize).contains(&interrupted),
        "{interrupted} reads of the interrupted snapshot ({at_kill} in the file at the kill)"
    );
    let (again, changes) = all[interrupted..].split_at(rows as usize);
    let second = lsn(&again[0]).expect("a snapshot read");
    assert!(second > first, "the new snapshot is read on a new slot");
    let mut ids: Vec<u64> = again
        .iter()
        .map(|e| {
            assert_eq!((e["op"].as_str(), lsn(e)), (Some("r"), Some(second)), "{e}");
            e["after"]["id"].as_u64().expect("id")
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=rows).collect::<Vec<_>>(), "each row read once");
    assert_eq!(
        again
            .iter()
            .filter(|e| e["after"]["name"] == "changed")
            .count(),
        20,
        "the new snapshot shows the changes made while the host was down"
    );
    assert_eq!(
        events(&read_written_lines(&out))[interrupted + rows as usize..],
        [("c".to_string(), rows + 1)],
        "then the change after the restart, once: {changes:?}"
    );
    drop(host);
}
