//! The engine calls that deliver a follow-up and keep its ledger (the marker and the lease), as a
//! small trait: the engine
//! client in the daemon, a scripted fake in the unit tests of the delivery rules (reqwest's
//! timeouts fire at once under tokio's paused clock, so those tests cannot go through it).

use std::future::Future;

use crate::engine::{CorrelateMessageRequest, EngineClient, EngineError};
use crate::ledger::Marker;
use crate::variables::TypedValue;

/// The engine calls that deliver a follow-up and keep its ledger: the engine client in the
/// daemon, a scripted fake in unit tests (reqwest's timeouts fire at once under a paused clock).
pub(crate) trait Ledger: Sync {
    /// Sends the compare-and-set message.
    fn correlate(
        &self,
        request: &CorrelateMessageRequest,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Reads a ledger variable of `instance`, the marker or the lease (`None`: the instance has
    /// none, or has ended).
    fn read_marker(
        &self,
        instance: &str,
        variable: &str,
    ) -> impl Future<Output = Result<Option<String>, EngineError>> + Send;
    /// Writes the lease variable of `instance` (a lease renewed, failed or handed back: never
    /// the marker, which only `complete` and the message write).
    fn write_lease(
        &self,
        instance: &str,
        variable: &str,
        marker: &Marker,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
}

impl Ledger for EngineClient {
    fn correlate(
        &self,
        request: &CorrelateMessageRequest,
    ) -> impl Future<Output = Result<(), EngineError>> + Send {
        self.correlate_message(request)
    }

    fn read_marker(
        &self,
        instance: &str,
        variable: &str,
    ) -> impl Future<Output = Result<Option<String>, EngineError>> + Send {
        self.instance_variable(instance, variable)
    }

    fn write_lease(
        &self,
        instance: &str,
        variable: &str,
        marker: &Marker,
    ) -> impl Future<Output = Result<(), EngineError>> + Send {
        let value = TypedValue::string(marker.to_string());
        async move { self.set_instance_variable(instance, variable, &value).await }
    }
}
