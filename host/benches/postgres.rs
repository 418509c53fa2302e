//! PostgreSQL connector benchmark on a real server (initdb in a temp dir) and a real
//! `wasm-connect` process: postgres-source rows/s (table → topic), postgres-sink rows/s
//! (topic → table, insert and upsert), and the floor they are measured against in the same
//! run: `psql \copy` of the same rows over the same loopback TCP; and postgres-cdc
//! changes/s (one INSERT transaction of the same rows → change events in a topic).
//!
//! Run: `cargo bench --bench postgres` (needs PostgreSQL: `apt-get install postgresql`;
//! `PG_BENCH_ROWS`, default 100,000).

#[path = "../../tests/common/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::postgres::{Postgres, PASSWORD};
use harness::{bundled_plugins, json_create, json_get, wait_for, Host, Workspace};
use serde_json::{json, Value};

fn main() {
    let rows: u64 = std::env::var("PG_BENCH_ROWS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(100_000);
    let pg = Postgres::start();
    pg.sql("CREATE TABLE src (id bigserial PRIMARY KEY, ts timestamp NOT NULL DEFAULT clock_timestamp(), name text, qty integer, price numeric(10,2), meta jsonb)");
    pg.sql(&format!(
        "INSERT INTO src (name, qty, price, meta) SELECT 'row ' || g, g, g * 1.25, jsonb_build_object('g', g) FROM generate_series(1, {rows}) g"
    ));
    for table in ["floor", "dst_insert", "dst_upsert"] {
        pg.sql(&format!("CREATE TABLE {table} (LIKE src INCLUDING ALL)"));
    }
    println!("postgres benchmark: {rows} rows of 6 columns, PostgreSQL on loopback");

    let csv = pg.dir.path().join("rows.csv");
    pg.sql(&format!("\\copy src TO '{}' CSV", csv.display()));
    let started = Instant::now();
    pg.sql(&format!("\\copy floor FROM '{}' CSV", csv.display()));
    let floor = rate(rows, started.elapsed());
    println!("psql \\copy floor:        {floor:>9.0} rows/s");

    let ws = Workspace::new();
    for name in [
        "postgres-source.wasm",
        "postgres-sink.wasm",
        "postgres-cdc.wasm",
    ] {
        std::fs::copy(bundled_plugins().join(name), ws.plugin_dir().join(name))
            .expect("copy plugin (run scripts/build-plugins.sh)");
    }
    let host = ws.start();
    wait_for(
        Duration::from_secs(120),
        "the PostgreSQL plugins loaded",
        || {
            let plugins = json_get(&host, "/connector-plugins").body;
            ["postgres-source", "postgres-sink", "postgres-cdc"]
                .iter()
                .all(|p| plugins.contains(&format!("\"{p}\"")))
        },
    );
    let connection = |config: Value| {
        let mut config = config;
        config["connection.url"] = json!(pg.jdbc_url());
        config["connection.password"] = json!(PASSWORD);
        config["network.allow"] = json!(pg.address());
        config
    };
    let started = Instant::now();
    create(
        &host,
        "pg-in",
        connection(
            json!({"connector.class": "postgres-source", "mode": "incrementing", "incrementing.column.name": "id",
                          "table.whitelist": "src", "topic.prefix": "pg-", "batch.max.rows": "5000"}),
        ),
    );
    let last = rows.to_string();
    wait_for(
        Duration::from_secs(600),
        "the source to read every row",
        || {
            json_get(&host, "/connectors/pg-in/offsets").json()["offsets"][0]["offset"]["position"]
                .as_str()
                .is_some_and(|p| p == format!("[\"{last}\"]"))
        },
    );
    let source = rate(rows, started.elapsed());
    println!("postgres-source:         {source:>9.0} rows/s (table -> topic)");

    for (mode, table) in [("insert", "dst_insert"), ("upsert", "dst_upsert")] {
        let started = Instant::now();
        create(
            &host,
            &format!("pg-out-{mode}"),
            connection(
                json!({"connector.class": "postgres-sink", "topics": "pg-src", "table.name.format": table,
                              "insert.mode": mode, "pk.mode": "record_value", "pk.fields": "id"}),
            ),
        );
        wait_for(
            Duration::from_secs(600),
            "the sink to write every row",
            || pg.sql(&format!("SELECT count(*) FROM {table}")) == last,
        );
        let sink = rate(rows, started.elapsed());
        println!(
            "postgres-sink ({mode}):  {sink:>9.0} rows/s (topic -> table) = {:.2}x the \\copy floor",
            sink / floor
        );
    }

    // CDC: the slot streams before the rows are written; timed from the INSERT's start to
    // the connector's position naming the transaction's last change.
    pg.sql("CREATE TABLE cdc_src (LIKE src INCLUDING ALL)");
    create(
        &host,
        "pg-cdc",
        json!({"connector.class": "postgres-cdc", "database.hostname": "127.0.0.1",
               "database.port": pg.port.to_string(), "database.user": "postgres",
               "database.password": PASSWORD, "database.dbname": "postgres",
               "network.allow": pg.address(), "topic.prefix": "cdc", "slot.name": "bench_slot",
               "publication.name": "bench_pub", "table.include.list": "public.cdc_src"}),
    );
    wait_for(Duration::from_secs(60), "the CDC slot streaming", || {
        pg.sql(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bench_slot' AND active",
        ) == "1"
    });
    let started = Instant::now();
    pg.sql("INSERT INTO cdc_src SELECT * FROM src");
    let complete = format!(":{rows}");
    wait_for(
        Duration::from_secs(600),
        "the CDC connector to deliver every change",
        || {
            json_get(&host, "/connectors/pg-cdc/offsets").json()["offsets"][0]["offset"]["position"]
                .as_str()
                .is_some_and(|p| p.ends_with(&complete))
        },
    );
    let cdc = rate(rows, started.elapsed());
    println!(
        "postgres-cdc:            {cdc:>9.0} changes/s (one {rows}-row INSERT -> topic, Debezium envelope)"
    );
}

fn create(host: &Host, name: &str, config: Value) {
    let answer = json_create(host, name, config);
    assert_eq!(answer.status, 201, "create {name}: {}", answer.body);
}

fn rate(rows: u64, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64()
}
