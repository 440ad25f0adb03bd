//! The receiver's watch caches: a request reads memory only, never the API server.
//!
//! - DPDKConfigSources in the source controller's scope, trimmed to their name and spec.
//! - For each Secret a source names, a watch on that one Secret (field selector
//!   `metadata.name`), trimmed to its `webhookSecret`: no other Secret is ever read, and
//!   no other key is kept.
//!
//! Until a cache has synced, lookups find nothing and every request is refused.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use dpdk_bridge::api::DPDKConfigSource;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::manifest::validate::check_dns_subdomain;
use crate::source::SourceKey;
use crate::source::auth::{Credentials, keys};

/// One Secret's watch: its cache and the task that fills it (stopped on drop).
struct SecretWatch {
    store: Store<Secret>,
    task: tokio::task::AbortHandle,
}

impl Drop for SecretWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type SecretWatches = Arc<RwLock<HashMap<ObjectRef<Secret>, SecretWatch>>>;

/// Read side of the caches. Cheap to clone.
#[derive(Clone)]
pub struct Caches {
    sources: Store<DPDKConfigSource>,
    secrets: SecretWatches,
}

impl Caches {
    /// The non-empty `webhookSecret` of the Secret that `key`'s source names, if the
    /// source, its secretRef, the Secret and the key all exist.
    pub fn webhook_secret(&self, key: &SourceKey) -> Option<Vec<u8>> {
        let src = self
            .sources
            .get(&ObjectRef::new(&key.name).within(&key.namespace))?;
        let secret_ref = secret_ref_of(&src)?;
        let store = self.secrets.read().ok()?.get(&secret_ref)?.store.clone();
        let secret = store.get(&secret_ref)?;
        Credentials::from_secret(&secret)
            .webhook_secret
            .filter(|s| !s.is_empty())
    }

    /// How many Secrets are watched (one per distinct secretRef).
    pub fn watched_secrets(&self) -> usize {
        self.secrets.read().map(|m| m.len()).unwrap_or(0)
    }
}

/// The Secret a source names, when its name is a valid object name (it goes into a
/// field selector).
fn secret_ref_of(src: &DPDKConfigSource) -> Option<ObjectRef<Secret>> {
    let name = &src.spec.secret_ref.as_ref()?.name;
    let namespace = src.metadata.namespace.as_deref()?;
    check_dns_subdomain(name).ok()?;
    Some(ObjectRef::new(name).within(namespace))
}

/// Keeps what the cache needs of an object's metadata: name, namespace, version.
fn trim_meta(meta: &mut ObjectMeta) {
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        resource_version: meta.resource_version.take(),
        uid: meta.uid.take(),
        ..ObjectMeta::default()
    };
}

/// A source, trimmed to what a webhook lookup needs.
fn trim_source(src: &mut DPDKConfigSource) {
    trim_meta(&mut src.metadata);
    src.status = None;
    src.spec.ignore_differences.clear();
}

/// A Secret, trimmed to its `webhookSecret` (no other key is kept in memory).
fn trim_secret(secret: &mut Secret) {
    trim_meta(&mut secret.metadata);
    secret.string_data = None;
    secret.type_ = None;
    secret.immutable = None;
    let kept: Option<ByteString> = secret
        .data
        .as_mut()
        .and_then(|d| d.remove(keys::WEBHOOK_SECRET));
    secret.data = kept.map(|v| std::iter::once((keys::WEBHOOK_SECRET.to_string(), v)).collect());
}

/// Starts the caches: the read side, and the future that fills them until `shutdown`.
pub fn start(
    client: Client,
    namespace: Option<String>,
    shutdown: CancellationToken,
) -> (
    Caches,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (sources, writer) = reflector::store();
    let secrets: SecretWatches = Arc::default();
    let caches = Caches {
        sources: sources.clone(),
        secrets: secrets.clone(),
    };
    let api: Api<DPDKConfigSource> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(trim_source),
    );
    let fill = async move {
        let mut stream = std::pin::pin!(stream.take_until(shutdown.cancelled_owned()));
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))
                | Ok(watcher::Event::InitDone) => sync_secret_watches(&client, &sources, &secrets),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "webhook receiver: watching DPDKConfigSources")
                }
            }
        }
        if let Ok(mut w) = secrets.write() {
            w.clear();
        }
    };
    (caches, fill)
}

/// Watches exactly the Secrets the cached sources name: starts the missing watches and
/// stops those no source names any more.
fn sync_secret_watches(
    client: &Client,
    sources: &Store<DPDKConfigSource>,
    secrets: &SecretWatches,
) {
    let wanted: HashSet<ObjectRef<Secret>> = sources
        .state()
        .iter()
        .filter_map(|s| secret_ref_of(s))
        .collect();
    let Ok(mut watches) = secrets.write() else {
        return;
    };
    watches.retain(|r, _| wanted.contains(r));
    for r in wanted {
        if let std::collections::hash_map::Entry::Vacant(e) = watches.entry(r) {
            let w = watch_secret(client, e.key());
            e.insert(w);
        }
    }
}

fn watch_secret(client: &Client, r: &ObjectRef<Secret>) -> SecretWatch {
    let namespace = r.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", r.name));
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, config).default_backoff().modify(trim_secret),
    );
    let name = r.to_string();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(secret = %name, error = %e, "webhook receiver: watching a source's Secret");
            }
        }
    });
    SecretWatch {
        store,
        task: task.abort_handle(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_trimmed_secret_keeps_only_its_webhook_secret() {
        let mut s = Secret {
            metadata: ObjectMeta {
                name: Some("creds".into()),
                namespace: Some("dpdk-operator".into()),
                annotations: Some(BTreeMap::from([("a".into(), "b".repeat(1000))])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("password".to_string(), ByteString(b"hunter2".to_vec())),
                ("identity".to_string(), ByteString(vec![b'k'; 4096])),
                (
                    keys::WEBHOOK_SECRET.to_string(),
                    ByteString(b"s3cret\n".to_vec()),
                ),
            ])),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        trim_secret(&mut s);
        assert_eq!(s.metadata.name.as_deref(), Some("creds"));
        assert!(s.metadata.annotations.is_none());
        let data = s.data.as_ref().expect("data");
        assert_eq!(data.keys().collect::<Vec<_>>(), [keys::WEBHOOK_SECRET]);
        assert_eq!(
            Credentials::from_secret(&s).webhook_secret.as_deref(),
            Some(&b"s3cret"[..])
        );
        let mut none = Secret {
            data: Some(BTreeMap::from([(
                "password".to_string(),
                ByteString(b"x".to_vec()),
            )])),
            ..Default::default()
        };
        trim_secret(&mut none);
        assert!(none.data.is_none());
    }

    #[test]
    fn only_valid_secret_names_are_watched() {
        let src = |name: &str| -> DPDKConfigSource {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "networking.k8s.aws/v1alpha1",
                "kind": "DPDKConfigSource",
                "metadata": {"name": "s", "namespace": "dpdk-operator"},
                "spec": {"url": "https://example.com/r.git", "ref": {"branch": "main"}, "secretRef": {"name": name}},
            }))
            .expect("source")
        };
        assert_eq!(
            secret_ref_of(&src("creds")),
            Some(ObjectRef::new("creds").within("dpdk-operator"))
        );
        assert_eq!(
            secret_ref_of(&src("a,metadata.namespace=kube-system")),
            None
        );
        assert_eq!(secret_ref_of(&src("")), None);
    }
}
