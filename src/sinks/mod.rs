//! Where messages end up other than Exim's spool: the quarantine store, and the notices that
//! say so.

pub mod notify;
pub mod quarantine;
