//! The dashboard at `/ui` on the JSON API listener: server-rendered pages (askama templates
//! in `templates/`) that read without JavaScript, plus vendored, pinned htmx and uPlot
//! (`assets/`, versions and checksums in `assets/VENDORED.md`) embedded in the binary.
//!
//! Pages: overview (failures pinned first), connectors (filter, actions), connector detail
//! (live chart from the host's ring buffer of rates, tasks, config with secrets masked,
//! offsets, the event log of state changes), create (a form from the plugin's config definitions, validated per field),
//! plugins, topics with an inspector. Every action is a `POST` that needs the `HX-Request`
//! header, which a cross-site form cannot send (and, when a token is set, the bearer token
//! or the session cookie of [`login`]).

pub mod login;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::api::kafka::connector_location;
use crate::metrics::rates::Sample;
use crate::sandbox::Identity;
use crate::storage::TargetState;
use crate::worker::events::{Event, Subject};
use crate::worker::{
    ConnectorOffsets, ConnectorView, PutError, PutMode, RecordView, RunState, Worker, WorkerView,
};
use login::SignedIn;

#[derive(rust_embed::RustEmbed)]
#[folder = "src/ui/assets/"]
struct Assets;

/// What the dashboard remembers between requests.
#[derive(Default)]
struct UiState {
    /// When the dashboard first saw each failed connector failed.
    failed_since: Mutex<BTreeMap<String, SystemTime>>,
}

/// The routes under `/ui`.
pub fn router() -> Router<Arc<Worker>> {
    Router::new()
        .route("/ui", get(overview))
        .route("/ui/", get(overview))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/connectors", get(connectors))
        .route("/ui/connectors/{name}", get(connector))
        .route("/ui/connectors/{name}/rates", get(rates))
        .route("/ui/connectors/{name}/{action}", post(act))
        .route("/ui/create", get(create_page).post(create))
        .route("/ui/plugins", get(plugins))
        .route("/ui/topics", get(topics))
        .route("/ui/topics/{topic}", get(topic))
        .layer(Extension(Arc::new(UiState::default())))
}

/// What the layout shows on every page: the worker, and a logout button when the page was
/// opened through a session of [`login`].
struct Head {
    worker: String,
    signed_in: bool,
}

impl Head {
    fn new(worker: &str, signed_in: Option<Extension<SignedIn>>) -> Head {
        Head {
            worker: worker.to_string(),
            signed_in: signed_in.is_some(),
        }
    }
}

/// A rendered page, or a 500 naming the template error (a bug, never guest input).
fn page(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the dashboard could not render this page: {e}"),
        )
            .into_response(),
    }
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, what).into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    let Some(content) = Assets::get(&file) else {
        return not_found(format!("no dashboard asset {file}"));
    };
    let mime = match file.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    };
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        content.data.into_owned(),
    )
        .into_response()
}

/// A connector's name as one path segment.
fn link(name: &str) -> String {
    connector_location(name)
        .trim_start_matches("/connectors/")
        .to_string()
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

/// `bytes` for people: KiB, MiB, GiB.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// One connector as the tables show it.
struct ConnectorRow {
    name: String,
    link: String,
    state: RunState,
    /// Paused or stopped: the row offers resume instead of pause.
    resumable: bool,
    kind: &'static str,
    class: String,
    running: usize,
    total: usize,
    reason: Option<String>,
    sparkline: String,
}

impl ConnectorRow {
    fn new(c: &ConnectorView, samples: &[Sample]) -> Self {
        let state = if c.failed() {
            RunState::Failed
        } else {
            c.state()
        };
        ConnectorRow {
            name: c.name.clone(),
            link: link(&c.name),
            state,
            resumable: matches!(state, RunState::Paused | RunState::Stopped),
            kind: c.kind_name(),
            class: c.class.clone(),
            running: (c.status.tasks.iter())
                .filter(|t| t.state == RunState::Running)
                .count(),
            total: c.status.tasks.len(),
            reason: c.reason().map(str::to_string),
            sparkline: sparkline(samples),
        }
    }
}

/// An inline SVG of records out per second over the samples (no JS needed).
fn sparkline(samples: &[Sample]) -> String {
    let points: Vec<f64> = samples.iter().map(|s| s.records_out).collect();
    let top = points.iter().copied().fold(0.0_f64, f64::max);
    let (width, height) = (120.0, 24.0);
    let step = width / (points.len().max(2) - 1) as f64;
    let coordinates: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = if top > 0.0 {
                height - v / top * height
            } else {
                height
            };
            format!("{:.1},{:.1}", i as f64 * step, y)
        })
        .collect();
    format!(
        r##"<svg width="120" height="24" viewBox="0 0 120 24" role="img" aria-label="peak {top:.0} records/s"><polyline fill="none" stroke="#16a34a" stroke-width="1.5" points="{}"/></svg>"##,
        coordinates.join(" ")
    )
}

/// The connectors of `view`, failed ones first (then by name).
fn rows(worker: &Worker, view: &WorkerView) -> Vec<ConnectorRow> {
    let samples = |name: &str| {
        worker
            .metrics()
            .map(|m| m.rates.samples(name))
            .unwrap_or_default()
    };
    let mut rows: Vec<ConnectorRow> = view
        .connectors
        .iter()
        .map(|c| ConnectorRow::new(c, &samples(&c.name)))
        .collect();
    rows.sort_by_key(|r| (r.state != RunState::Failed, r.name.clone()));
    rows
}

struct Failure {
    name: String,
    link: String,
    reason: String,
    since: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    head: Head,
    counts: Vec<(&'static str, usize)>,
    memory: String,
    cpu: String,
    failures: Vec<Failure>,
    connectors: Vec<ConnectorRow>,
    plugins_loaded: usize,
    broken: Vec<(String, String)>,
}

async fn overview(
    State(worker): State<Arc<Worker>>,
    Extension(ui): Extension<Arc<UiState>>,
    signed_in: Option<Extension<SignedIn>>,
) -> Response {
    let view = worker.view().await;
    let connectors = rows(&worker, &view);
    let now = SystemTime::now();
    let failures = {
        let mut since = ui.failed_since.lock().unwrap_or_else(|e| e.into_inner());
        let failed = |name: &String| {
            (connectors.iter()).any(|c| &c.name == name && c.state == RunState::Failed)
        };
        since.retain(|name, _| failed(name));
        connectors
            .iter()
            .filter(|c| c.state == RunState::Failed)
            .map(|c| {
                let at = *since.entry(c.name.clone()).or_insert(now);
                let minutes = now.duration_since(at).unwrap_or_default().as_secs() / 60;
                Failure {
                    name: c.name.clone(),
                    link: c.link.clone(),
                    reason: first_line(c.reason.as_deref().unwrap_or("")),
                    since: format!("{minutes} min ago"),
                }
            })
            .collect()
    };
    let counts = [
        RunState::Running,
        RunState::Failed,
        RunState::Paused,
        RunState::Stopped,
        RunState::Unassigned,
    ]
    .map(|state| {
        let n = connectors.iter().filter(|c| c.state == state).count();
        (state.name(), n)
    })
    .to_vec();
    let (_, resident) = crate::metrics::process::memory_bytes();
    let broken = (view.plugins.iter())
        .filter_map(|p| Some((p.file.clone(), p.broken.clone()?)))
        .collect();
    page(&Overview {
        head: Head::new(&view.worker, signed_in),
        counts,
        memory: size(u64::try_from(resident).unwrap_or(0)),
        cpu: format!("{:.1} s", crate::metrics::process::cpu_seconds()),
        failures,
        connectors,
        plugins_loaded: view.plugins.iter().filter(|p| p.loaded.is_some()).count(),
        broken,
    })
}

#[derive(Template)]
#[template(path = "connectors.html")]
struct Connectors {
    head: Head,
    connectors: Vec<ConnectorRow>,
}

async fn connectors(
    State(worker): State<Arc<Worker>>,
    signed_in: Option<Extension<SignedIn>>,
) -> Response {
    let view = worker.view().await;
    page(&Connectors {
        head: Head::new(&view.worker, signed_in),
        connectors: rows(&worker, &view),
    })
}

struct TaskRow {
    id: usize,
    state: &'static str,
    worker: String,
    restarts: u64,
    memory: String,
    cpu: String,
    trace: Option<String>,
    first_line: String,
}

/// One row of a connector's event log.
struct EventRow {
    at: String,
    subject: String,
    from: &'static str,
    to: &'static str,
    reason: String,
}

impl EventRow {
    fn new(event: &Event) -> Self {
        EventRow {
            at: utc(event.at),
            subject: match event.subject {
                Subject::Connector => "connector".into(),
                Subject::Task(task) => format!("task {task}"),
            },
            from: event.from.map_or("—", RunState::name),
            to: event.to.name(),
            reason: event.reason.clone(),
        }
    }
}

/// `at` as `YYYY-MM-DD HH:MM:SS` in UTC.
fn utc(at: SystemTime) -> String {
    let seconds = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, time) = (seconds / 86_400, seconds % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let (h, m, s) = (time / 3600, time / 60 % 60, time % 60);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}")
}

#[derive(Template)]
#[template(path = "connector.html")]
struct Detail {
    head: Head,
    c: ConnectorRow,
    tasks: Vec<TaskRow>,
    config: Vec<(String, String)>,
    offsets: String,
    events: Vec<EventRow>,
}

async fn connector(
    State(worker): State<Arc<Worker>>,
    Path(name): Path<String>,
    signed_in: Option<Extension<SignedIn>>,
) -> Response {
    let view = worker.view().await;
    let Some(c) = view.connectors.iter().find(|c| c.name == name) else {
        return not_found(format!("no connector {name}"));
    };
    let samples = (worker.metrics())
        .map(|m| m.rates.samples(&name))
        .unwrap_or_default();
    let tasks = c
        .status
        .tasks
        .iter()
        .enumerate()
        .map(|(id, t)| {
            let usage = (worker.metrics())
                .map(|m| m.task_usage(&name, u32::try_from(id).unwrap_or(u32::MAX)))
                .unwrap_or_default();
            TaskRow {
                id,
                state: t.state.name(),
                worker: t.worker.clone(),
                restarts: usage.restarts,
                memory: format!(
                    "{} / {}",
                    size(u64::try_from(usage.memory_bytes).unwrap_or(0)),
                    size(u64::try_from(usage.memory_limit_bytes).unwrap_or(0))
                ),
                cpu: format!("{:.2} s", usage.cpu_seconds),
                first_line: first_line(t.trace.as_deref().unwrap_or("")),
                trace: t.trace.clone(),
            }
        })
        .collect();
    let offsets = match worker.offsets(&name).await {
        Ok(ConnectorOffsets::Source(positions)) => (positions.iter())
            .map(|(partition, position)| format!("{partition}: {position}"))
            .collect::<Vec<_>>()
            .join("\n"),
        Ok(ConnectorOffsets::Sink(offsets)) => (offsets.iter())
            .map(|(topic, offset)| format!("{topic}: next offset {offset}"))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("offsets unavailable: {e}"),
    };
    let events = worker.events(&name).await.unwrap_or_default();
    page(&Detail {
        head: Head::new(&view.worker, signed_in),
        c: ConnectorRow::new(c, &samples),
        tasks,
        config: c.config.clone().into_iter().collect(),
        offsets,
        events: events.iter().map(EventRow::new).collect(),
    })
}

/// `GET /ui/connectors/{name}/rates`: the chart's samples as JSON.
async fn rates(State(worker): State<Arc<Worker>>, Path(name): Path<String>) -> Response {
    let samples = (worker.metrics())
        .map(|m| m.rates.samples(&name))
        .unwrap_or_default();
    axum::Json(serde_json::json!({"connector": name, "samples": samples})).into_response()
}

/// A dashboard action on a connector.
#[derive(Debug, Clone, Copy)]
enum Action {
    Pause,
    Resume,
    Stop,
    Restart,
    RestartFailed,
    Delete,
}

impl Action {
    fn parse(text: &str) -> Option<Action> {
        Some(match text {
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "stop" => Action::Stop,
            "restart" => Action::Restart,
            "restart-failed" => Action::RestartFailed,
            "delete" => Action::Delete,
            _ => return None,
        })
    }
}

/// The refusal of a mutation without the `HX-Request` header (a cross-site form cannot
/// send it); `None` when the header is there.
fn not_from_dashboard(headers: &HeaderMap) -> Option<Response> {
    match headers.get("hx-request") {
        Some(_) => None,
        None => Some((
            StatusCode::FORBIDDEN,
            "dashboard actions need the HX-Request header (sent by the dashboard's buttons); use the JSON API from scripts",
        )
            .into_response()),
    }
}

async fn act(
    State(worker): State<Arc<Worker>>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = not_from_dashboard(&headers) {
        return refused;
    }
    let Some(action) = Action::parse(&action) else {
        return not_found(format!(
            "no action {action}; use pause, resume, stop, restart, restart-failed or delete"
        ));
    };
    let outcome = match action {
        Action::Pause => worker.set_target(&name, TargetState::Paused).await,
        Action::Resume => worker.set_target(&name, TargetState::Running).await,
        Action::Stop => worker.set_target(&name, TargetState::Stopped).await,
        Action::Restart => worker.restart(&name, false).await.map(drop),
        Action::RestartFailed => worker.restart(&name, true).await.map(drop),
        Action::Delete => {
            return match worker.delete(&name).await {
                Ok(true) => {
                    (StatusCode::NO_CONTENT, [("HX-Redirect", "/ui/connectors")]).into_response()
                }
                Ok(false) => not_found(format!("no connector {name}")),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
            }
        }
    };
    match outcome {
        Ok(()) => (StatusCode::NO_CONTENT, [("HX-Refresh", "true")]).into_response(),
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

/// One field of the create form.
struct Field {
    key: String,
    required: bool,
    secret: bool,
    value: String,
    placeholder: String,
    help: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "create_form.html")]
struct CreateForm {
    plugin: String,
    name: String,
    name_error: Option<String>,
    fields: Vec<Field>,
    general_error: Option<String>,
}

#[derive(Template)]
#[template(path = "create.html")]
struct CreatePage {
    head: Head,
    plugins: Vec<String>,
    plugin: String,
    name: String,
    name_error: Option<String>,
    fields: Vec<Field>,
    general_error: Option<String>,
}

/// The form's fields for `plugin`, filled from `values`.
fn fields(worker: &Worker, plugin: &str, values: &BTreeMap<String, String>) -> Vec<Field> {
    let Some(plugin) = worker.plugins().find(plugin) else {
        return Vec::new();
    };
    plugin
        .descriptor
        .config_defs
        .iter()
        .map(|def| Field {
            key: def.name.clone(),
            required: def.required,
            secret: def.secret,
            value: values.get(&def.name).cloned().unwrap_or_default(),
            placeholder: def.default_value.clone().unwrap_or_default(),
            help: def.description.clone(),
            error: None,
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct CreateQuery {
    plugin: Option<String>,
}

async fn create_page(
    State(worker): State<Arc<Worker>>,
    Query(query): Query<CreateQuery>,
    signed_in: Option<Extension<SignedIn>>,
) -> Response {
    let plugins = worker.plugins().names();
    let plugin = query
        .plugin
        .filter(|p| plugins.contains(p))
        .or_else(|| plugins.first().cloned())
        .unwrap_or_default();
    page(&CreatePage {
        head: Head::new(worker.id(), signed_in),
        fields: fields(&worker, &plugin, &BTreeMap::new()),
        plugins,
        plugin,
        name: String::new(),
        name_error: None,
        general_error: None,
    })
}

/// `POST /ui/create`: validates through the plugin's config checks and shows each error
/// beside its field; creates the connector when there is none.
async fn create(State(worker): State<Arc<Worker>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = not_from_dashboard(&headers) {
        return refused;
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let mut plugin = String::new();
    let mut name = String::new();
    let mut values = BTreeMap::new();
    for (key, value) in pairs {
        match key.as_str() {
            "plugin" => plugin = value,
            "name" => name = value.trim().to_string(),
            _ => {
                if let Some(key) = key.strip_prefix("cfg:") {
                    values.insert(key.to_string(), value);
                }
            }
        }
    }
    let mut form = CreateForm {
        fields: fields(&worker, &plugin, &values),
        plugin: plugin.clone(),
        name: name.clone(),
        name_error: None,
        general_error: None,
    };
    let Some(found) = worker.plugins().find(&plugin) else {
        form.general_error = Some(format!("no plugin {plugin} is loaded"));
        return page(&form);
    };
    if let Err(e) = crate::names::validate(crate::names::NameKind::Connector, &name) {
        form.name_error = Some(e.to_string());
    }
    let mut config: crate::storage::Properties = values
        .into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .collect();
    config.insert("connector.class".into(), plugin.clone());
    let identity = Identity {
        connector: name.clone(),
        task: None,
    };
    let errors = match worker.config_errors(&identity, &found, &config).await {
        Ok(errors) => errors,
        Err(e) => {
            form.general_error = Some(e.to_string());
            return page(&form);
        }
    };
    for error in errors {
        match form.fields.iter_mut().find(|f| f.key == error.key) {
            Some(field) => field.error = Some(error.message),
            None => {
                let general = form.general_error.get_or_insert_with(String::new);
                general.push_str(&format!("{}: {} ", error.key, error.message));
            }
        }
    }
    let has_errors = form.name_error.is_some()
        || form.general_error.is_some()
        || form.fields.iter().any(|f| f.error.is_some());
    if has_errors {
        return page(&form);
    }
    match worker
        .put_with(&name, config, PutMode::CreateOnly, None)
        .await
    {
        Ok(_) => {
            let to = format!("/ui/connectors/{}", link(&name));
            (StatusCode::OK, [("HX-Redirect", to)], "created").into_response()
        }
        Err(PutError::AlreadyExists(_)) => {
            form.name_error = Some(format!("a connector named {name} exists already"));
            page(&form)
        }
        Err(e) => {
            form.general_error = Some(e.to_string());
            page(&form)
        }
    }
}

struct PluginRow {
    name: String,
    version: String,
    kind: &'static str,
    aliases: String,
    keys: String,
    used_by: String,
    file: String,
    digest: String,
    load: String,
}

#[derive(Template)]
#[template(path = "plugins.html")]
struct Plugins {
    head: Head,
    plugins: Vec<PluginRow>,
    broken: Vec<(String, String)>,
}

async fn plugins(
    State(worker): State<Arc<Worker>>,
    signed_in: Option<Extension<SignedIn>>,
) -> Response {
    let view = worker.view().await;
    let plugins = (view.plugins.iter())
        .filter_map(|p| {
            let (name, version) = p.loaded.clone()?;
            let used_by: Vec<&str> = (view.connectors.iter())
                .filter(|c| {
                    let class = c.class.split('@').next().unwrap_or_default();
                    class == name || p.aliases.iter().any(|a| a == class)
                })
                .map(|c| c.name.as_str())
                .collect();
            let keys: Vec<String> = (p.keys.iter())
                .map(|k| {
                    let required = if k.required { " (required)" } else { "" };
                    format!("{}{required}", k.name)
                })
                .collect();
            Some(PluginRow {
                name,
                version,
                kind: p.kind.map_or("", crate::plugins::kind_name),
                aliases: p.aliases.join(", "),
                keys: keys.join(", "),
                used_by: used_by.join(", "),
                file: p.file.clone(),
                digest: p.digest.clone(),
                load: p.load.clone(),
            })
        })
        .collect();
    let broken = (view.plugins.iter())
        .filter_map(|p| Some((p.file.clone(), p.broken.clone()?)))
        .collect();
    page(&Plugins {
        head: Head::new(&view.worker, signed_in),
        plugins,
        broken,
    })
}

struct TopicRow {
    name: String,
    link: String,
    size: String,
    end_offset: u64,
    writers: String,
    readers: String,
}

#[derive(Template)]
#[template(path = "topics.html")]
struct Topics {
    head: Head,
    topics: Vec<TopicRow>,
}

/// Whether `c`'s config names `topic` under one of `keys` (comma-separated lists).
fn names_topic(c: &ConnectorView, keys: &[&str], topic: &str) -> bool {
    keys.iter()
        .filter_map(|k| c.config.get(*k))
        .any(|v| v.split(',').any(|t| t.trim() == topic))
}

async fn topics(
    State(worker): State<Arc<Worker>>,
    signed_in: Option<Extension<SignedIn>>,
) -> Response {
    let view = worker.view().await;
    let mut topics: Vec<TopicRow> = (view.topics.iter())
        .map(|t| {
            let connectors = |keys: &[&str], kind: &str| {
                let names: Vec<&str> = (view.connectors.iter())
                    .filter(|c| c.kind_name() == kind && names_topic(c, keys, &t.name))
                    .map(|c| c.name.as_str())
                    .collect();
                names.join(", ")
            };
            TopicRow {
                name: t.name.clone(),
                link: link(&t.name),
                size: size(t.bytes),
                end_offset: t.end_offset,
                writers: connectors(&crate::worker::keys::TOPIC_NAME_KEYS, "source"),
                readers: connectors(&crate::worker::keys::SINK_TOPICS, "sink"),
            }
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    page(&Topics {
        head: Head::new(&view.worker, signed_in),
        topics,
    })
}

#[derive(Template)]
#[template(path = "topic.html")]
struct TopicPage {
    head: Head,
    topic: String,
    link: String,
    end_offset: u64,
    cut: usize,
    records: Vec<RecordView>,
}

async fn topic(
    State(worker): State<Arc<Worker>>,
    Path(topic): Path<String>,
    signed_in: Option<Extension<SignedIn>>,
) -> Response {
    match worker.topic_records(&topic, None, 20) {
        Ok(read) => page(&TopicPage {
            head: Head::new(worker.id(), signed_in),
            link: link(&topic),
            topic,
            end_offset: read.end_offset,
            cut: crate::worker::SHOWN_CHARS,
            records: read.records,
        }),
        Err(e) => not_found(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_show_as_utc_dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_827_696);
        assert_eq!(utc(leap_day), "2000-02-29 12:34:56");
        let later = UNIX_EPOCH + Duration::from_secs(1_796_094_000);
        assert_eq!(utc(later), "2026-12-01 03:00:00");
    }
}
