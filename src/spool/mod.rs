//! Exim's spool format: message ids, the `-H` and `-D` files, where they live, and the locks Exim
//! honours. This module knows nothing of scanning; everything else stands on it.
//!
//! The grammar follows Exim's own reader and writer (spool_in.c, spool_out.c). Lines we do not
//! understand are kept and written back unchanged.

pub mod data_file;
pub mod error;
pub mod header_file;
pub mod headers;
pub mod id;
pub mod lock;
pub mod message;
pub mod open;
pub mod options;
pub mod paths;
pub mod recipients;
pub mod tree;
pub mod validate;

pub use data_file::{BodyCounts, DataFile};
pub use error::{Reason, SpoolError};
pub use header_file::{Originator, SpoolHeader};
pub use headers::{HeaderError, HeaderFlag, HeaderLine, HeaderSection, Position, Removal};
pub use id::{IdClock, IdFormat, IdMinter, MessageId};
pub use lock::{DataLock, LockProbe};
pub use message::{BodySource, MessageView};
pub use options::{AclScope, AclVariable, OptionLine, SpoolOption, SpoolOptions};
pub use paths::SpoolPair;
pub use recipients::{RecipientFields, RecipientLine};
pub use tree::NonRecipients;
