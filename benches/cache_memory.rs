//! The memory of the dispatcher's caches: heap bytes and allocations held per cached object, by
//! kind, for objects as the API server sends them (the bench's own, in `fixtures/cache/`, with
//! `managedFields`) and as the dispatcher keeps them (endpoints and subscriptions slimmed,
//! Secrets and delivery ConfigMaps projected to their data and parsed policy). Each kind is 10,000 objects in the
//! store the dispatcher keeps it in with 10,000 endpoints: a kube reflector store for endpoints
//! and subscriptions, a named store (`dispatcher/named.rs`) for the projections. A counting allocator
//! measures what is live after the store is built, less what was live before.
//! Run with `cargo bench --bench cache_memory`.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;
use webhook_operator::api::{WebhookEndpoint, WebhookSubscription};
use webhook_operator::dispatcher::named;
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

/// Heap bytes and allocations per object of `OBJECTS` copies of `fixture` (a `S` as sent) kept
/// by `hold` (a reflector store, or a named store of a projection, as the dispatcher keeps that
/// kind), less what was live before. The copies are parsed one at a time as `hold` takes them.
fn per_object<S, H>(
    fixture: &str,
    hold: impl FnOnce(&mut dyn Iterator<Item = S>) -> (H, usize),
) -> (f64, f64)
where
    S: DeserializeOwned,
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
    let mut parsed = copies
        .iter()
        .map(|copy| serde_json::from_str::<S>(copy).expect("the fixture parses"));
    let (held, count) = hold(&mut parsed);
    let (after_bytes, after_allocations) = live();
    assert_eq!(count, OBJECTS, "every copy has its own name");
    drop(held);
    let objects = OBJECTS as f64;
    (
        (after_bytes - before_bytes) as f64 / objects,
        (after_allocations - before_allocations) as f64 / objects,
    )
}

/// Held in a kube reflector store as `K`, each made by `keep` (as the watch's `modify`).
fn in_reflector<S, K>(
    keep: impl Fn(S) -> K,
) -> impl FnOnce(&mut dyn Iterator<Item = S>) -> (reflector::Store<K>, usize)
where
    K: kube::Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    move |objects| {
        let (reader, mut writer) = reflector::store::<K>();
        writer.apply_watcher_event(&Event::Init);
        for object in objects {
            writer.apply_watcher_event(&Event::InitApply(keep(object)));
        }
        writer.apply_watcher_event(&Event::InitDone);
        let count = reader.state().len();
        (reader, count)
    }
}

/// Held in a named store as the projection `V` (as the dispatcher keeps Secrets and ConfigMaps).
fn in_named<S, V>() -> impl FnOnce(&mut dyn Iterator<Item = S>) -> (named::NamedStore<V>, usize)
where
    S: kube::Resource,
    V: From<S>,
{
    |objects| {
        let (store, mut writer) = named::store::<V>();
        writer.apply(Event::Init);
        for object in objects {
            writer.apply(named::project(Event::InitApply(object)));
        }
        writer.apply(Event::InitDone);
        let count = store.count();
        (store, count)
    }
}

/// Prints the figures of a kind as sent and as kept; returns the bytes kept per object.
fn report<S, H>(
    kind: &str,
    fixture: &str,
    kept: impl FnOnce(&mut dyn Iterator<Item = S>) -> (H, usize),
) -> f64
where
    S: kube::Resource + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static,
    S::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (sent_bytes, sent_allocations) = per_object(fixture, in_reflector(|object: S| object));
    let (kept_bytes, kept_allocations) = per_object(fixture, kept);
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
        in_reflector(slimmed::<WebhookEndpoint>),
    ) + report(
        "WebhookSubscription",
        include_str!("fixtures/cache/webhooksubscriptions.json"),
        in_reflector(slimmed::<WebhookSubscription>),
    ) + report(
        "Secret",
        include_str!("fixtures/cache/secrets.json"),
        in_named::<Secret, CachedSecret>(),
    ) + report(
        "ConfigMap",
        include_str!("fixtures/cache/configmaps.json"),
        in_named::<ConfigMap, CachedPolicy>(),
    );
    println!(
        "all four kinds cached, per endpoint: {total:.0} B; at {OBJECTS} endpoints: {:.1} MiB",
        total * OBJECTS as f64 / (1024.0 * 1024.0)
    );
}
