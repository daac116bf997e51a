//! Watchers that turn resources into work, one module each: WebhookEvents are published once
//! ([`events`]), finished ones deleted after their TTL ([`expiry`]); endpoints are held and
//! released when suspended and resumed and send test deliveries when annotated ([`endpoints`]);
//! WebhookReplays redeliver once and report their progress ([`replays`]); a paused ordered
//! endpoint is resumed when annotated ([`resume`]).
pub mod endpoints;
pub mod events;
pub mod expiry;
pub mod replays;
pub mod resume;
pub mod slim;
