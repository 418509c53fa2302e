//! Each connector's event log: its last [`MAX_EVENTS`] state changes and those of its tasks
//! on this worker, each with when and why (the operator's action, or the first line of a
//! failure's trace, cut to [`MAX_REASON_CHARS`]). Held by the connector, so it goes with
//! the connector on delete; kept across config updates. The dashboard's connector page shows
//! it. Fed in two places only: [`super::TaskContext::publish`] for tasks, and the worker's
//! lifecycle changes for the connector.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use super::lifecycle::RunState;
use super::task::TaskStatus;

/// Events kept per connector; older ones are dropped.
pub const MAX_EVENTS: usize = 100;
/// Characters of a reason kept (a guest's trace can be long).
pub const MAX_REASON_CHARS: usize = 300;

/// What changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Connector,
    Task(u32),
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: SystemTime,
    pub subject: Subject,
    /// None when the subject had no state before (created, restored).
    pub from: Option<RunState>,
    pub to: RunState,
    /// Why, in one line ("operator: pause", a failure's first line); may be empty.
    pub reason: String,
}

/// A connector's bounded log of events.
#[derive(Debug, Default)]
pub struct EventLog(Mutex<VecDeque<Event>>);

impl EventLog {
    /// Records a change of `subject` from `from` to `to` because of `reason` (only its first
    /// line is kept, cut to [`MAX_REASON_CHARS`]).
    pub fn record(&self, subject: Subject, from: Option<RunState>, to: RunState, reason: &str) {
        self.push(Event {
            at: SystemTime::now(),
            subject,
            from,
            to,
            reason: one_line(reason),
        });
    }

    fn push(&self, event: Event) {
        let mut events = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == MAX_EVENTS {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// A task's status moving from `old` to `new`; nothing when neither the state nor the
    /// first line of the reason changed.
    pub fn task(&self, task: u32, old: &TaskStatus, new: &TaskStatus) {
        let reason = |status: &TaskStatus| match status {
            TaskStatus::Failed(reason) => one_line(reason),
            _ => String::new(),
        };
        let (from, to, why) = (shown(old), shown(new), reason(new));
        if from != to || reason(old) != why {
            let event = Event {
                at: SystemTime::now(),
                subject: Subject::Task(task),
                from: Some(from),
                to,
                reason: why,
            };
            self.push(event);
        }
    }

    /// The operator restarting a task whose status was `was`.
    pub fn restarted(&self, task: u32, was: &TaskStatus) {
        let (from, to) = (Some(shown(was)), RunState::Restarting);
        self.record(Subject::Task(task), from, to, "operator: restart");
    }

    /// The events, newest first.
    pub fn newest_first(&self) -> Vec<Event> {
        let events = self.0.lock().unwrap_or_else(|e| e.into_inner());
        events.iter().rev().cloned().collect()
    }
}

/// A task status as the log names it: the API's states, with a task that ended shown as
/// STOPPED and one starting as UNASSIGNED.
fn shown(status: &TaskStatus) -> RunState {
    match status {
        TaskStatus::Starting => RunState::Unassigned,
        TaskStatus::Running => RunState::Running,
        TaskStatus::Paused => RunState::Paused,
        TaskStatus::Failed(_) => RunState::Failed,
        TaskStatus::Stopped => RunState::Stopped,
    }
}

/// The first line of `text`, at most [`MAX_REASON_CHARS`] characters (an ellipsis marks a cut).
fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_events_first_and_at_most_max_events() {
        let log = EventLog::default();
        for i in 0..(MAX_EVENTS + 5) {
            log.record(
                Subject::Connector,
                Some(RunState::Running),
                RunState::Paused,
                &format!("event {i}"),
            );
        }
        let events = log.newest_first();
        assert_eq!(events.len(), MAX_EVENTS);
        assert_eq!(events[0].reason, format!("event {}", MAX_EVENTS + 4));
        assert_eq!(events[MAX_EVENTS - 1].reason, "event 5");
    }

    #[test]
    fn a_task_failure_keeps_the_first_line_of_its_trace_cut_to_the_bound() {
        let log = EventLog::default();
        let trace = format!("{}\nsecond line", "x".repeat(MAX_REASON_CHARS * 2));
        log.task(0, &TaskStatus::Running, &TaskStatus::Failed(trace));
        log.task(0, &TaskStatus::Running, &TaskStatus::Running);
        let events = log.newest_first();
        assert_eq!(events.len(), 1, "an unchanged status is no event");
        let event = &events[0];
        assert_eq!(event.subject, Subject::Task(0));
        assert_eq!(
            (event.from, event.to),
            (Some(RunState::Running), RunState::Failed)
        );
        assert_eq!(event.reason.chars().count(), MAX_REASON_CHARS + 1);
        assert!(event.reason.ends_with('…') && !event.reason.contains("second"));
    }
}
