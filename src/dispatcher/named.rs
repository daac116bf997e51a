//! A cache of values by namespace and name, filled from a watch: what a kube reflector store
//! does, for the dispatcher's projected Secrets and delivery ConfigMaps (`projected.rs`). A
//! reflector keeps each object with an `ObjectMeta` (about 350 bytes inline even when only the
//! name and namespace are set) under an `ObjectRef` key with its own copies of the name,
//! namespace, UID and resourceVersion; here a value is kept once, under its namespace and name.
//! With 10,000 endpoints that is two objects an endpoint (`cargo bench --bench cache_memory`).
//!
//! The semantics are the reflector's: a (re)list fills a buffer that replaces the map when it is
//! complete (`InitDone`), so a relist never shows a half-listed cache, and the store is ready
//! from the first complete list on.
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use kube::runtime::watcher::Event;
use kube::Resource;
use tokio::sync::watch;

/// A value and the namespace and name it is found by.
#[derive(Clone, Debug)]
pub struct Named<V> {
    namespace: String,
    name: String,
    value: V,
}

impl<V> Named<V> {
    /// `object`'s namespace and name, with `object` made into a `V`.
    pub fn of<K: Resource>(object: K) -> Self
    where
        V: From<K>,
    {
        let meta = object.meta();
        Self {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            value: V::from(object),
        }
    }
}

/// A watch event of the API object as one of its projection's, with its namespace and name.
pub fn project<K: Resource, V: From<K>>(event: Event<K>) -> Event<Named<V>> {
    match event {
        Event::Apply(object) => Event::Apply(Named::of(object)),
        Event::Delete(object) => Event::Delete(Named::of(object)),
        Event::Init => Event::Init,
        Event::InitApply(object) => Event::InitApply(Named::of(object)),
        Event::InitDone => Event::InitDone,
    }
}

/// Namespace → name → value.
type Map<V> = HashMap<Box<str>, HashMap<Box<str>, Arc<V>>>;

fn insert<V>(map: &mut Map<V>, named: Named<V>) {
    map.entry(named.namespace.into_boxed_str())
        .or_default()
        .insert(named.name.into_boxed_str(), Arc::new(named.value));
}

fn remove<V>(map: &mut Map<V>, named: &Named<V>) {
    if let Some(names) = map.get_mut(named.namespace.as_str()) {
        names.remove(named.name.as_str());
        if names.is_empty() {
            map.remove(named.namespace.as_str());
        }
    }
}

/// The writer went away before the first list completed (its watch ended). Also what
/// `Cache::wait_until_ready` answers for the reflector stores beside these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the watch filling this cache ended before its first list completed")]
pub struct WriterGone;

/// The reading side; clones share the cache.
pub struct NamedStore<V> {
    map: Arc<RwLock<Map<V>>>,
    ready: watch::Receiver<bool>,
}

impl<V> Clone for NamedStore<V> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<V> NamedStore<V> {
    /// The value of `namespace`/`name`, if cached.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<V>> {
        // A panic while the writer held the lock left the map as it was between two events.
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        map.get(namespace)?.get(name).cloned()
    }

    /// Values cached.
    pub fn count(&self) -> usize {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        map.values().map(HashMap::len).sum()
    }

    /// Resolves once the first list is complete.
    pub async fn wait_until_ready(&self) -> Result<(), WriterGone> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(|ready| *ready)
            .await
            .map(|_| ())
            .map_err(|_| WriterGone)
    }
}

/// The writing side: every watch event goes through [`NamedWriter::apply`].
pub struct NamedWriter<V> {
    map: Arc<RwLock<Map<V>>>,
    ready: watch::Sender<bool>,
    /// A (re)list in progress.
    buffer: Option<Map<V>>,
}

impl<V> NamedWriter<V> {
    pub fn apply(&mut self, event: Event<Named<V>>) {
        match event {
            Event::Apply(named) => insert(&mut self.write(), named),
            Event::Delete(named) => remove(&mut self.write(), &named),
            Event::Init => self.buffer = Some(Map::new()),
            Event::InitApply(named) => insert(self.buffer.get_or_insert_with(Map::new), named),
            Event::InitDone => {
                let listed = self.buffer.take().unwrap_or_default();
                *self.write() = listed;
                self.ready.send_replace(true);
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Map<V>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An empty cache, not ready until its writer has applied a complete list.
pub fn store<V>() -> (NamedStore<V>, NamedWriter<V>) {
    let map = Arc::new(RwLock::new(Map::new()));
    let (sender, receiver) = watch::channel(false);
    (
        NamedStore {
            map: map.clone(),
            ready: receiver,
        },
        NamedWriter {
            map,
            ready: sender,
            buffer: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    /// A ConfigMap's data value `v`, as a projection would keep it.
    #[derive(Debug, PartialEq)]
    struct Value(String);

    impl From<ConfigMap> for Value {
        fn from(config_map: ConfigMap) -> Self {
            Self(
                config_map
                    .data
                    .and_then(|data| data.get("v").cloned())
                    .unwrap_or_default(),
            )
        }
    }

    fn config_map(namespace: &str, name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            data: Some([("v".to_owned(), value.to_owned())].into()),
            ..ConfigMap::default()
        }
    }

    fn value(store: &NamedStore<Value>, namespace: &str, name: &str) -> Option<String> {
        store.get(namespace, name).map(|v| v.0.clone())
    }

    #[tokio::test]
    async fn a_list_fills_it_and_makes_it_ready_then_events_change_it() {
        let (store, mut writer) = store::<Value>();
        let not_yet = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            store.wait_until_ready(),
        );
        assert!(not_yet.await.is_err(), "not ready before a list");

        writer.apply(Event::Init);
        writer.apply(project(Event::InitApply(config_map("a", "x", "1"))));
        assert_eq!(value(&store, "a", "x"), None, "a list shows when complete");
        writer.apply(project(Event::InitApply(config_map("b", "x", "2"))));
        writer.apply(Event::InitDone);
        store.wait_until_ready().await.unwrap();
        assert_eq!(value(&store, "a", "x").as_deref(), Some("1"));
        assert_eq!(value(&store, "b", "x").as_deref(), Some("2"));
        assert_eq!(value(&store, "a", "y"), None);

        writer.apply(project(Event::Apply(config_map("a", "x", "3"))));
        writer.apply(project(Event::Delete(config_map("b", "x", "2"))));
        assert_eq!(value(&store, "a", "x").as_deref(), Some("3"));
        assert_eq!(value(&store, "b", "x"), None);
        assert_eq!(store.count(), 1);
    }

    #[tokio::test]
    async fn a_relist_replaces_everything_at_once() {
        let (store, mut writer) = store::<Value>();
        writer.apply(Event::Init);
        writer.apply(project(Event::InitApply(config_map("a", "gone", "1"))));
        writer.apply(project(Event::InitApply(config_map("a", "kept", "1"))));
        writer.apply(Event::InitDone);

        writer.apply(Event::Init);
        writer.apply(project(Event::InitApply(config_map("a", "kept", "2"))));
        assert_eq!(
            value(&store, "a", "gone").as_deref(),
            Some("1"),
            "until done"
        );
        writer.apply(Event::InitDone);
        assert_eq!(
            value(&store, "a", "gone"),
            None,
            "deleted while not watched"
        );
        assert_eq!(value(&store, "a", "kept").as_deref(), Some("2"));
        assert!(store.wait_until_ready().await.is_ok());
    }

    #[tokio::test]
    async fn a_writer_gone_before_its_first_list_is_an_error() {
        let (store, writer) = store::<Value>();
        drop(writer);
        assert_eq!(store.wait_until_ready().await, Err(WriterGone));
    }
}
