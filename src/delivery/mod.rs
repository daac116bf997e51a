//! The delivery engine: decides and performs one delivery, independent of Kubernetes.
//!
//! Everything here is pure (no network, no Kubernetes, clock and randomness passed in) except
//! [`client`], which performs the HTTP request. The dispatcher combines the pieces:
//!
//! 1. [`payload::render`] the body once per event and endpoint (the bytes signed are the bytes sent);
//! 2. ask the endpoint's [`circuit::CircuitBreaker`] and [`ratelimit::RateLimiter`] whether it may send now;
//! 3. [`request::build_request`]: the body, [`signing::sign`] and [`headers::build_headers`] for
//!    this attempt;
//! 4. [`client::DeliveryClient::send`] (egress policy enforced at connect time, see [`egress`]);
//! 5. [`outcome::decide`] what happens next (delivered, retry at T, dead letter, blocked), using
//!    [`retry`] for the schedule, and report the attempt back to the breaker and the limiter.
//!
//! [`config`] converts the endpoint's effective policy (`api::policy`) into these types;
//! [`verify`] is the receiver's side of [`signing`], used by examples and tests.
pub mod circuit;
pub mod client;
pub mod config;
pub mod egress;
pub mod headers;
pub mod ordering;
pub mod outcome;
pub mod payload;
pub mod performance;
pub mod ratelimit;
pub mod request;
pub mod retry;
pub mod signing;
pub mod verify;
