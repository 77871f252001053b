//! Where messages end up other than Exim's spool: the quarantine store.

pub mod quarantine;
