//! The `kestrel` command's library half: standalone mode, which puts the
//! node agent's capture and edge filter in front of the operator's
//! pipeline in one process (`kestrel standalone`).
#![deny(missing_docs)]

pub mod profile;
pub mod standalone;
