//! Where messages come from: a queuefile directory, a stock Exim's incoming spool, an archive of
//! spool files, or a captured queue. This module finds pairs; it does not scan them.

pub mod archive;
pub mod capture;
pub mod queuefile;
