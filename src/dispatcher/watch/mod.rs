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

use kube::runtime::watcher;

/// Objects per page of a (re)list. A page is held whole: its response body while it is parsed,
/// then every object with its managedFields until the cache has taken it in (`slim` and the
/// projections make objects small one at a time, as the watcher hands them over). At kube's default of 500, the first lists of a dispatcher with
/// 10,000 endpoints (endpoints, subscriptions, Secrets and ConfigMaps at once) held tens of
/// megabytes more than the caches they filled (docs/benchmarks.md, issue 19, session 22); at
/// 100, a list of 10,000 objects is 100 requests instead of 20.
pub const LIST_PAGE_SIZE: u32 = 100;

/// How the dispatcher watches a kind: kube's defaults, with [`LIST_PAGE_SIZE`] pages.
pub fn config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE_SIZE)
}
