//! Routes: the topic/message pairs one daemon serves (`[[route]]` in the config file).
//!
//! A route is one topic and what follows its tasks. A route of the message kind (the default)
//! completes each task at once with fixed variables, and later sends the message that tells the
//! process, after its delay and the work done before it. A route of the complete kind runs its
//! command while the task is locked, and the command's exit decides the task (see
//! [`crate::work::CommandHandler`]): nothing follows. Without
//! `[[route]]` the daemon has one route, built from the top-level keys and flags; with it, those
//! are the defaults of every route. Either way a [`Route`] is fully resolved when the
//! configuration is built (`config::routes`), so nothing downstream merges "route value or the
//! default" again, and the first route is a route like the others. Whatever is worker-wide stays so: one fetch asks for every
//! topic, and `--max-tasks`, `--max-pending-follow-ups`, `--follow-up-concurrency` and the retry
//! budget are shared by all routes, so a second route cannot double the load on the engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::correlation::{CorrelateBy, FollowUpMessage};
use crate::engine::{ExternalTask, FetchFilter};
use crate::handler::{Handler, HandlerError, MessageCorrelationHandler, TaskResult};
use crate::variables::Variables;
use crate::work::{CommandHandler, CommandWork, Delay, DynWork};
use crate::worker::Subscription;

/// One topic/message pair, with everything that may differ between routes; what may not (the
/// worker-wide policy) is [`crate::correlation::CorrelationPolicy`].
#[derive(Debug, Clone)]
pub struct Route {
    /// The external-task topic.
    pub topic: String,
    /// How long its tasks stay locked.
    pub lock_duration: Duration,
    /// The variables its tasks are completed with.
    pub variables: Variables,
    /// The follow-up message: its name, its delay and the variables it carries besides the
    /// work's result.
    pub message: FollowUpMessage,
    /// The work before the message, when it is a program; `None`: only the delay.
    pub follow_up_command: Option<CommandWork>,
    /// Which of the topic's tasks this route fetches (tenants, definitions, ...).
    pub filter: FetchFilter,
    /// What serving a task means on this route (`kind`).
    pub kind: RouteKind,
}

/// A route's `kind`: how its tasks are served.
#[derive(Debug, Clone, Default)]
pub enum RouteKind {
    /// Complete the task at once, then send the follow-up message (`kind = "message"`, the
    /// default: the pattern this worker was made for).
    #[default]
    Message,
    /// Run the command while the task is locked; its exit completes the task, raises a BPMN
    /// error or fails it (`kind = "complete"`). No message follows.
    Complete(CommandHandler),
}

impl RouteKind {
    /// The name the config file gives it.
    pub fn name(&self) -> &'static str {
        match self {
            RouteKind::Message => "message",
            RouteKind::Complete(_) => "complete",
        }
    }
}

impl Route {
    /// What the fetch asks for on this route's behalf.
    pub fn subscription(&self) -> Subscription {
        Subscription {
            topic: self.topic.clone(),
            lock_duration: self.lock_duration,
            filter: self.filter.clone(),
        }
    }

    /// The work this route's follow-ups do: its command, or the delay alone (a complete route
    /// has no follow-ups).
    pub fn work(&self) -> Arc<dyn DynWork> {
        match &self.follow_up_command {
            Some(command) => Arc::new(command.clone()),
            None => Arc::new(Delay),
        }
    }
}

/// The daemon's handler over several routes: each task is served by its own route — completed
/// with its route's variables (message kind) or by its route's command (complete kind) — and
/// fetched with the variables its route's work reads.
#[derive(Debug, Clone)]
pub struct RouteHandler {
    by_topic: HashMap<String, TopicHandler>,
    /// For a task whose topic the engine did not name (it always does): the first route's.
    first: TopicHandler,
}

/// One route's handler, of its kind.
#[derive(Debug, Clone)]
enum TopicHandler {
    Message(MessageCorrelationHandler),
    Complete(CommandHandler),
}

impl TopicHandler {
    fn variables_to_fetch(&self) -> Option<Vec<String>> {
        match self {
            TopicHandler::Message(handler) => handler.variables_to_fetch(),
            TopicHandler::Complete(handler) => handler.variables_to_fetch(),
        }
    }

    async fn handle(&self, task: &ExternalTask) -> Result<TaskResult, HandlerError> {
        match self {
            TopicHandler::Message(handler) => handler.handle(task).await,
            TopicHandler::Complete(handler) => handler.handle(task).await,
        }
    }
}

impl RouteHandler {
    /// The handler of `routes` (at least one), each doing `works[i]` (for the variables it
    /// fetches), correlating by `correlate_by`.
    pub fn new(routes: &[(Route, Arc<dyn DynWork>)], correlate_by: CorrelateBy) -> Option<Self> {
        let handlers: Vec<(String, TopicHandler)> = routes
            .iter()
            .map(|(route, work)| {
                let handler = match &route.kind {
                    RouteKind::Message => TopicHandler::Message(MessageCorrelationHandler {
                        variables: route.variables.clone(),
                        correlate_by,
                        fetch_variables: work.variables_to_fetch(),
                    }),
                    RouteKind::Complete(command) => TopicHandler::Complete(command.clone()),
                };
                (route.topic.clone(), handler)
            })
            .collect();
        let first = handlers.first()?.1.clone();
        Some(RouteHandler {
            by_topic: handlers.into_iter().collect(),
            first,
        })
    }

    fn for_topic(&self, topic: Option<&str>) -> &TopicHandler {
        topic
            .and_then(|topic| self.by_topic.get(topic))
            .unwrap_or(&self.first)
    }
}

impl Handler for RouteHandler {
    fn variables_to_fetch(&self) -> Option<Vec<String>> {
        self.first.variables_to_fetch()
    }

    fn variables_to_fetch_for(&self, topic: &str) -> Option<Vec<String>> {
        self.for_topic(Some(topic)).variables_to_fetch()
    }

    async fn handle(&self, task: &ExternalTask) -> Result<TaskResult, HandlerError> {
        self.for_topic(task.topic_name.as_deref())
            .handle(task)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variables::TypedValue;

    fn route(topic: &str, var: i32) -> Route {
        Route {
            topic: topic.to_owned(),
            lock_duration: Duration::from_secs(60),
            variables: Variables::from([("v".to_owned(), TypedValue::integer(var))]),
            message: FollowUpMessage {
                name: format!("{topic}_done"),
                delay: Duration::ZERO,
                variables: Variables::new(),
            },
            follow_up_command: None,
            filter: FetchFilter::default(),
            kind: RouteKind::Message,
        }
    }

    fn task(topic: &str) -> ExternalTask {
        serde_json::from_value(serde_json::json!({
            "id": "t1",
            "topicName": topic,
            "businessKey": "k",
            "processInstanceId": "p1",
        }))
        .expect("valid task")
    }

    #[tokio::test]
    async fn each_task_is_completed_with_its_own_routes_variables() {
        let routes: Vec<(Route, Arc<dyn DynWork>)> = vec![
            (route("a", 1), Arc::new(Delay)),
            (route("b", 2), Arc::new(Delay)),
        ];
        let handler = RouteHandler::new(&routes, CorrelateBy::BusinessKey).expect("two routes");
        for (topic, expected) in [("a", 1), ("b", 2)] {
            let Ok(TaskResult::Complete { variables, .. }) = handler.handle(&task(topic)).await
            else {
                panic!("route {topic} must complete its task");
            };
            assert_eq!(
                variables["v"],
                TypedValue::integer(expected),
                "route {topic}"
            );
        }
    }

    /// A complete route's tasks go to its command (no follow-up), a message route's beside it
    /// are completed with its variables and a follow-up, and each fetches its own variables.
    #[tokio::test]
    async fn a_complete_routes_tasks_are_decided_by_its_command() {
        let command = CommandWork {
            program: "sh".into(),
            args: vec!["-c".to_owned(), r#"echo '{"by": "command"}'"#.to_owned()],
            timeout: Duration::from_secs(10),
            fetch_variables: vec!["orderId".to_owned()],
            pass_env: Vec::new(),
            withheld_env: Vec::new(),
        };
        let mut complete = route("c", 0);
        complete.kind = RouteKind::Complete(CommandHandler {
            command,
            retries: 3,
            retry_timeout: Duration::from_secs(1),
        });
        let routes: Vec<(Route, Arc<dyn DynWork>)> = vec![
            (route("m", 1), Arc::new(Delay)),
            (complete, Arc::new(Delay)),
        ];
        let handler = RouteHandler::new(&routes, CorrelateBy::BusinessKey).expect("two routes");
        assert_eq!(
            handler.variables_to_fetch_for("c"),
            Some(vec!["orderId".to_owned()])
        );
        let Ok(TaskResult::Complete {
            variables,
            follow_up,
        }) = handler.handle(&task("c")).await
        else {
            panic!("the command completes its task");
        };
        assert_eq!(variables["by"], TypedValue::string("command"));
        assert_eq!(follow_up, None);
        let Ok(TaskResult::Complete { follow_up, .. }) = handler.handle(&task("m")).await else {
            panic!("the message route completes its task");
        };
        assert!(follow_up.is_some(), "a message route's task is followed up");
    }

    #[test]
    fn no_routes_make_no_handler() {
        assert!(RouteHandler::new(&[], CorrelateBy::BusinessKey).is_none());
    }
}
