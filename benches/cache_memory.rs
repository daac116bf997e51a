//! The memory of the dispatcher's caches: heap bytes and allocations held per cached object, by
//! kind, for objects as the API server sends them (the bench's own, in `fixtures/cache/`, with
//! `managedFields`) and as the dispatcher keeps them (endpoints and subscriptions slimmed,
//! Secrets and delivery ConfigMaps projected to their data and parsed policy). Each kind is 10,000 objects in a kube
//! reflector store, as the dispatcher holds them with 10,000 endpoints. A counting allocator
//! measures what is live after the store is built, less what was live before.
//! Run with `cargo bench --bench cache_memory`.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;
use webhook_operator::api::{WebhookEndpoint, WebhookSubscription};
use webhook_operator::dispatcher::projected::{CachedPolicy, CachedSecret};
use webhook_operator::dispatcher::watch::slim::slim;

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCATIONS: AtomicIsize = AtomicIsize::new(0);

fn signed(size: usize) -> isize {
    isize::try_from(size).unwrap_or(isize::MAX)
}

// SAFETY: every call goes straight to the system allocator; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(signed(layout.size()), Ordering::Relaxed);
        LIVE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(signed(layout.size()), Ordering::Relaxed);
        LIVE_ALLOCATIONS.fetch_sub(1, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(signed(new_size) - signed(layout.size()), Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const OBJECTS: usize = 10_000;
/// The number every fixture's names carry; each copy gets its own.
const FIXTURE_NUMBERS: [&str; 2] = ["1001", "3167"];

fn live() -> (isize, isize) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_ALLOCATIONS.load(Ordering::Relaxed),
    )
}

/// Heap bytes and allocations per object of `OBJECTS` copies of `fixture` (a `S` as sent) held
/// in a reflector store as `K`, each made by `keep` (as the watch's `modify` or projection).
fn per_object<S, K>(fixture: &str, keep: impl Fn(S) -> K) -> (f64, f64)
where
    S: DeserializeOwned,
    K: kube::Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let copies: Vec<String> = (0..OBJECTS)
        .map(|i| {
            let number = format!("{}", 100_000 + i);
            FIXTURE_NUMBERS
                .iter()
                .fold(fixture.to_owned(), |text, n| text.replace(n, &number))
        })
        .collect();
    let (before_bytes, before_allocations) = live();
    let (reader, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&Event::Init);
    for copy in &copies {
        let object: S = serde_json::from_str(copy).expect("the fixture parses");
        writer.apply_watcher_event(&Event::InitApply(keep(object)));
    }
    writer.apply_watcher_event(&Event::InitDone);
    let (after_bytes, after_allocations) = live();
    assert_eq!(reader.state().len(), OBJECTS, "every copy has its own name");
    let objects = OBJECTS as f64;
    (
        (after_bytes - before_bytes) as f64 / objects,
        (after_allocations - before_allocations) as f64 / objects,
    )
}

/// Prints the figures of a kind as sent and as kept; returns the bytes kept per object.
fn report<S, K>(kind: &str, fixture: &str, keep: impl Fn(S) -> K) -> f64
where
    S: kube::Resource + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static,
    S::DynamicType: Default + Eq + std::hash::Hash + Clone,
    K: kube::Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (sent_bytes, sent_allocations) = per_object::<S, S>(fixture, |object| object);
    let (kept_bytes, kept_allocations) = per_object::<S, K>(fixture, keep);
    println!(
        "{kind:<22} as sent {sent_bytes:>7.0} B in {sent_allocations:>5.1} allocations; \
         kept {kept_bytes:>7.0} B in {kept_allocations:>5.1} allocations ({:.2}×)",
        kept_bytes / sent_bytes
    );
    kept_bytes
}

fn slimmed<K: webhook_operator::dispatcher::watch::slim::Slim>(mut object: K) -> K {
    slim(&mut object);
    object
}

fn main() {
    println!("heap per cached object, {OBJECTS} objects a kind (requested bytes; the allocator adds its rounding)");
    let total = report(
        "WebhookEndpoint",
        include_str!("fixtures/cache/webhookendpoints.json"),
        slimmed::<WebhookEndpoint>,
    ) + report(
        "WebhookSubscription",
        include_str!("fixtures/cache/webhooksubscriptions.json"),
        slimmed::<WebhookSubscription>,
    ) + report(
        "Secret",
        include_str!("fixtures/cache/secrets.json"),
        |secret: Secret| CachedSecret::from(secret),
    ) + report(
        "ConfigMap",
        include_str!("fixtures/cache/configmaps.json"),
        |config_map: ConfigMap| CachedPolicy::from(config_map),
    );
    println!(
        "all four kinds cached, per endpoint: {total:.0} B; at {OBJECTS} endpoints: {:.1} MiB",
        total * OBJECTS as f64 / (1024.0 * 1024.0)
    );
}
