//! Tasks: the checks a task passes (`spec`), the JSON task forms (`json`), storing and dispatching them
//! (`dispatch`), watching their output (`watch`), and terminal sessions (`sessions`: PTY tasks and who
//! is attached to them), and how long ended tasks are kept (`retention`). Their stdin's windows are
//! in `core::stdin`.

pub mod dispatch;
pub mod json;
pub mod retention;
pub mod sessions;
pub mod spec;
pub mod watch;

pub use dispatch::NEVER_STARTED;
pub use spec::{MAX_SPEC_BYTES, normalise_spec};
pub use watch::WatchItem;
