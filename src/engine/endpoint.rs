//! The engine's REST endpoints the worker calls, one [`Endpoint`] value each: its metrics label,
//! HTTP method, path and whether it may be sent twice are written once, here. The calls
//! (`api.rs`) build requests from it, the transport (`transport.rs`) decides resends by it, and
//! the latency metric is labelled with it.
//!
//! To add an endpoint: a variant, its four facts in the `match`es, and a method in `api.rs`.

use reqwest::Method;

/// One endpoint of the engine's REST API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /external-task/fetchAndLock`
    FetchAndLock,
    /// `POST /external-task/{id}/complete`
    Complete,
    /// `POST /external-task/{id}/failure`
    Failure,
    /// `POST /external-task/{id}/bpmnError`
    BpmnError,
    /// `POST /external-task/{id}/extendLock`
    ExtendLock,
    /// `POST /external-task/{id}/unlock`
    Unlock,
    /// `POST /message`
    Message,
    /// `POST /deployment/create`
    Deploy,
    /// `POST /process-definition/key/{key}/start`, or of a tenant's definition:
    /// `.../key/{key}/tenant-id/{tenant}/start` (the call's id is then `{key}/tenant-id/{tenant}`)
    Start,
    /// `GET /external-task`
    ExternalTasks,
    /// `GET /event-subscription`
    EventSubscriptions,
    /// `GET /process-instance/{id}`
    ProcessInstance,
    /// `GET /history/external-task-log`
    ExternalTaskLog,
    /// `GET /event-subscription/count`
    EventSubscriptionCount,
    /// `GET /external-task/count`
    ExternalTaskCount,
    /// `GET /incident/count`
    IncidentCount,
    /// `GET /variable-instance`: one instance's marker.
    VariableInstances,
    /// `POST /variable-instance`: markers by value, across instances.
    VariableInstanceQuery,
    /// `POST /variable-instance/count`: markers by value, counted (`status`).
    VariableInstanceCount,
    /// `GET /process-instance/{id}/variables`: what a recovered follow-up's work reads.
    InstanceVariables,
    /// `POST /process-instance/{id}/variables`: a marker's lease, a failed follow-up.
    ModifyInstanceVariables,
    /// `POST /execution/{id}/create-incident`.
    CreateIncident,
    /// `GET /incident`.
    Incidents,
    /// `DELETE /incident/{id}`.
    DeleteIncident,
    /// `GET /process-definition`: the tenants that deployed (`status`).
    ProcessDefinitions,
    /// `GET /engine` (anonymous in every setup)
    Engine,
}

impl Endpoint {
    /// How the endpoint is named in metrics (`endpoint` label).
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::FetchAndLock => "fetchAndLock",
            Endpoint::Complete => "complete",
            Endpoint::Failure => "failure",
            Endpoint::BpmnError => "bpmnError",
            Endpoint::ExtendLock => "extendLock",
            Endpoint::Unlock => "unlock",
            Endpoint::Message => "message",
            Endpoint::Deploy => "deploy",
            Endpoint::Start => "start",
            Endpoint::ExternalTasks => "externalTasks",
            Endpoint::EventSubscriptions => "eventSubscriptions",
            Endpoint::ProcessInstance => "processInstance",
            Endpoint::ExternalTaskLog => "externalTaskLog",
            Endpoint::EventSubscriptionCount => "eventSubscriptionCount",
            Endpoint::ExternalTaskCount => "externalTaskCount",
            Endpoint::IncidentCount => "incidentCount",
            Endpoint::VariableInstances => "variableInstances",
            Endpoint::VariableInstanceQuery => "variableInstanceQuery",
            Endpoint::VariableInstanceCount => "variableInstanceCount",
            Endpoint::InstanceVariables => "instanceVariables",
            Endpoint::ModifyInstanceVariables => "modifyInstanceVariables",
            Endpoint::CreateIncident => "createIncident",
            Endpoint::Incidents => "incidents",
            Endpoint::DeleteIncident => "deleteIncident",
            Endpoint::ProcessDefinitions => "processDefinitions",
            Endpoint::Engine => "engine",
        }
    }

    /// The path below the REST root; `id` fills the one placeholder an endpoint may have.
    pub(super) fn path(self, id: &str) -> String {
        match self {
            Endpoint::FetchAndLock => "external-task/fetchAndLock".to_owned(),
            Endpoint::Complete => format!("external-task/{id}/complete"),
            Endpoint::Failure => format!("external-task/{id}/failure"),
            Endpoint::BpmnError => format!("external-task/{id}/bpmnError"),
            Endpoint::ExtendLock => format!("external-task/{id}/extendLock"),
            Endpoint::Unlock => format!("external-task/{id}/unlock"),
            Endpoint::Message => "message".to_owned(),
            Endpoint::Deploy => "deployment/create".to_owned(),
            Endpoint::Start => format!("process-definition/key/{id}/start"),
            Endpoint::ExternalTasks => "external-task".to_owned(),
            Endpoint::EventSubscriptions => "event-subscription".to_owned(),
            Endpoint::ProcessInstance => format!("process-instance/{id}"),
            Endpoint::ExternalTaskLog => "history/external-task-log".to_owned(),
            Endpoint::EventSubscriptionCount => "event-subscription/count".to_owned(),
            Endpoint::ExternalTaskCount => "external-task/count".to_owned(),
            Endpoint::IncidentCount => "incident/count".to_owned(),
            Endpoint::VariableInstances | Endpoint::VariableInstanceQuery => {
                "variable-instance".to_owned()
            }
            Endpoint::VariableInstanceCount => "variable-instance/count".to_owned(),
            Endpoint::InstanceVariables | Endpoint::ModifyInstanceVariables => {
                format!("process-instance/{id}/variables")
            }
            Endpoint::CreateIncident => format!("execution/{id}/create-incident"),
            Endpoint::Incidents => "incident".to_owned(),
            Endpoint::DeleteIncident => format!("incident/{id}"),
            Endpoint::ProcessDefinitions => "process-definition".to_owned(),
            Endpoint::Engine => "engine".to_owned(),
        }
    }

    /// The HTTP method.
    pub(super) fn method(self) -> Method {
        match self {
            Endpoint::FetchAndLock
            | Endpoint::Complete
            | Endpoint::Failure
            | Endpoint::BpmnError
            | Endpoint::ExtendLock
            | Endpoint::Unlock
            | Endpoint::Message
            | Endpoint::Deploy
            | Endpoint::Start
            | Endpoint::VariableInstanceQuery
            | Endpoint::ModifyInstanceVariables
            | Endpoint::VariableInstanceCount
            | Endpoint::CreateIncident => Method::POST,
            Endpoint::DeleteIncident => Method::DELETE,
            Endpoint::ExternalTasks
            | Endpoint::EventSubscriptions
            | Endpoint::ProcessInstance
            | Endpoint::ExternalTaskLog
            | Endpoint::EventSubscriptionCount
            | Endpoint::ExternalTaskCount
            | Endpoint::IncidentCount
            | Endpoint::VariableInstances
            | Endpoint::InstanceVariables
            | Endpoint::Incidents
            | Endpoint::ProcessDefinitions
            | Endpoint::Engine => Method::GET,
        }
    }

    /// Whether sending the call twice does no harm (a query, a fetch, an unlock), so the client
    /// may send it again by itself after a closed connection. A `complete` or a message may have
    /// been carried out already; its caller checks the engine's state before repeating it.
    pub(super) fn repeatable(self) -> bool {
        match self {
            Endpoint::Complete
            | Endpoint::Failure
            | Endpoint::BpmnError
            | Endpoint::Message
            | Endpoint::CreateIncident
            | Endpoint::Start => false,
            // Setting a variable to the same value twice leaves the same state.
            Endpoint::VariableInstanceQuery
            | Endpoint::VariableInstanceCount
            | Endpoint::DeleteIncident
            | Endpoint::ModifyInstanceVariables => true,
            // Duplicate filtering makes a repeated deployment a no-op.
            Endpoint::Deploy => true,
            Endpoint::FetchAndLock | Endpoint::ExtendLock | Endpoint::Unlock => true,
            _ => self.method() == Method::GET,
        }
    }

    /// Whether the engine answers the call without credentials.
    pub(super) fn anonymous(self) -> bool {
        self == Endpoint::Engine
    }
}
