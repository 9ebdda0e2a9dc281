//! The audit log: security-relevant events (sign-ins refused, principals managed, writes
//! denied) appended to a hash-chained table. Each entry's hash covers the previous entry's
//! hash and its own fields, so [`App::verify_audit`] finds any entry that was changed, removed
//! or reordered after it was written. Appending runs as its own write job (after the event,
//! never inside the transaction that may roll back), and never records a secret.

use model::Instant;
use sha2::{Digest, Sha256};
use store::AuditEntry;

use crate::{App, AppError, Caller};

/// What the chain of the first entry starts from.
const GENESIS: &str = "";

/// The hash an entry must carry.
fn chained_hash(previous: &str, at: Instant, actor: &str, event: &str, detail: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [previous, &at.micros().to_string(), actor, event, detail] {
        hasher.update(part.len().to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The outcome of checking the whole chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditCheck {
    pub entries: u64,
    /// The id of the first entry whose hash or link does not match, if any.
    pub first_broken: Option<i64>,
}

/// Who a caller is, for the log.
pub fn actor_of(caller: &Caller) -> String {
    caller.principal.label()
}

impl App {
    /// Appends an event to the audit log.
    pub async fn audit(&self, actor: String, event: &'static str, detail: serde_json::Value) -> Result<(), AppError> {
        let detail = detail.to_string();
        self.write_job(&Caller::server(), None, move |writer| {
            let principals = writer.principals();
            let previous = principals.last_audit_hash()?.unwrap_or_else(|| GENESIS.to_owned());
            let at = Instant::now();
            let hash = chained_hash(&previous, at, &actor, event, &detail);
            let entry = AuditEntry { id: 0, at, actor, event: event.to_owned(), detail, previous_hash: previous, hash };
            Ok(principals.append_audit(&entry)?)
        })
        .await
    }

    /// [`App::audit`] without waiting; a failure to log is itself logged.
    pub fn audit_later(&self, actor: String, event: &'static str, detail: serde_json::Value) {
        let app = self.clone();
        tokio::spawn(async move {
            if let Err(error) = app.audit(actor, event, detail).await {
                tracing::error!(%error, event, "cannot write the audit log");
            }
        });
    }

    /// Entries after `after`, oldest first; hub administrators only.
    pub async fn audit_entries(&self, caller: &Caller, after: i64, limit: i64) -> Result<Vec<AuditEntry>, AppError> {
        if !caller.principal.hub_admin {
            return Err(AppError::Forbidden("only hub administrators read the audit log".into()));
        }
        let limit = limit.clamp(1, 10_000);
        self.read_job(&Caller::server(), move |reader| Ok(reader.principals().audit_entries(after, limit)?)).await
    }

    /// Recomputes the whole chain.
    pub async fn verify_audit(&self) -> Result<AuditCheck, AppError> {
        self.read_job(&Caller::server(), |reader| {
            let principals = reader.principals();
            let (mut after, mut previous, mut entries) = (0_i64, GENESIS.to_owned(), 0_u64);
            loop {
                let page = principals.audit_entries(after, 10_000)?;
                if page.is_empty() {
                    return Ok(AuditCheck { entries, first_broken: None });
                }
                for entry in page {
                    let expected = chained_hash(&previous, entry.at, &entry.actor, &entry.event, &entry.detail);
                    if entry.previous_hash != previous || entry.hash != expected {
                        return Ok(AuditCheck { entries, first_broken: Some(entry.id) });
                    }
                    entries += 1;
                    after = entry.id;
                    previous = entry.hash;
                }
            }
        })
        .await
    }
}
