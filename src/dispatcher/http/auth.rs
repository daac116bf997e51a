//! The API's authentication and authorization decisions: [`crate::runtime::access`], shared with
//! the `/metrics` guard of both processes. The reviews themselves are made by [`super::review`].
pub use crate::runtime::access::*;
