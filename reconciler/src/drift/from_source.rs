//! The Git source controller's store as the drift runtime's Git side: each source's
//! latest good revision, its path and its ignore rules.

use tokio::sync::watch;

use super::model::GitSource;
use super::runtime::GitProvider;
use crate::source::SourceStore;

impl GitProvider for SourceStore {
    fn sources(&self) -> Vec<GitSource> {
        self.all()
            .into_iter()
            .map(|s| {
                let mut g = GitSource::from_manifests(
                    Some(s.key.clone()),
                    Some(s.revision.clone()),
                    &s.path,
                    &s.manifests,
                );
                g.ignore = s.ignore_differences.clone();
                g
            })
            .collect()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        SourceStore::subscribe(self)
    }
}
