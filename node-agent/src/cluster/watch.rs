//! The configuration watches: `NodeTrace/<node>` (a field selector on the name) and the shared
//! settings objects, every PodTraceProfile and MonitoringProfile (a few hundred bytes each).
//! Their latest state goes on a watch channel as [`Desired`], with only the shared objects the
//! node's pods refer to: an edit of a profile no pod of this node uses does not wake the
//! engine.
//!
//! ```text
//!  NodeTrace/<node> ──┐
//!  PodTraceProfiles ──┼─► Sources (pure) ──Desired {spec, generation, shared ∩ spec}──► engine,
//!  MonitoringProfiles ┘        sent once all three have listed, then on every change   writer
//! ```

use futures::{Stream, StreamExt};
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use podtrace_api::{
    MonitoringProfile, MonitoringProfileSpec, NodeTrace, NodeTraceSpec, PodTraceProfile,
    PodTraceProfileSpec, SharedSettings, nodetrace::PodTraceRef,
};
use std::collections::BTreeMap;
use tokio::sync::watch;

use super::Desired;

/// One event of one of the three watches, reduced to what the agent keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The NodeTrace of this node, or its deletion (`None`).
    NodeTrace(Option<(NodeTraceSpec, Option<i64>)>),
    /// The NodeTrace watch (re)lists.
    NodeTraceRelist,
    /// The NodeTrace watch listed (there may be no NodeTrace).
    NodeTraceListed,
    /// A PodTraceProfile changed (`Some`) or was deleted.
    PodTraceProfile(PodTraceRef, Option<PodTraceProfileSpec>),
    /// The PodTraceProfile watch (re)lists; the items follow as `PodTraceProfile` updates.
    PodTraceProfilesRelist,
    /// The PodTraceProfile watch listed.
    PodTraceProfilesListed,
    /// A MonitoringProfile changed (`Some`) or was deleted.
    MonitoringProfile(String, Option<MonitoringProfileSpec>),
    /// The MonitoringProfile watch (re)lists.
    MonitoringProfilesRelist,
    /// The MonitoringProfile watch listed.
    MonitoringProfilesListed,
}

/// What the three watches have shown so far.
#[derive(Debug, Default)]
pub struct Sources {
    spec: Option<NodeTraceSpec>,
    generation: Option<i64>,
    shared: SharedSettings,
    /// The NodeTrace of a relist in progress (`Some(None)`: none listed so far).
    relisting_nodetrace: Option<Option<(NodeTraceSpec, Option<i64>)>>,
    /// Objects of a relist in progress, swapped in when it is done, so that objects deleted
    /// while the watch was down are forgotten.
    relisting_podtrace_profiles: Option<BTreeMap<PodTraceRef, PodTraceProfileSpec>>,
    relisting_monitoring_profiles: Option<BTreeMap<String, MonitoringProfileSpec>>,
    listed: [bool; 3],
}

impl Sources {
    /// Applies one update.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::NodeTrace(nodetrace) => match self.relisting_nodetrace.as_mut() {
                Some(relist) => *relist = nodetrace,
                None => (self.spec, self.generation) = split(nodetrace),
            },
            Update::NodeTraceRelist => self.relisting_nodetrace = Some(None),
            Update::NodeTraceListed => {
                if let Some(relist) = self.relisting_nodetrace.take() {
                    (self.spec, self.generation) = split(relist);
                }
                self.listed[0] = true;
            }
            Update::PodTraceProfilesRelist => {
                self.relisting_podtrace_profiles = Some(BTreeMap::new())
            }
            Update::PodTraceProfile(key, spec) => {
                let map = match self.relisting_podtrace_profiles.as_mut() {
                    Some(relist) => relist,
                    None => &mut self.shared.podtrace_profiles,
                };
                match spec {
                    Some(spec) => map.insert(key, spec),
                    None => map.remove(&key),
                };
            }
            Update::PodTraceProfilesListed => {
                if let Some(relist) = self.relisting_podtrace_profiles.take() {
                    self.shared.podtrace_profiles = relist;
                }
                self.listed[1] = true;
            }
            Update::MonitoringProfilesRelist => {
                self.relisting_monitoring_profiles = Some(BTreeMap::new());
            }
            Update::MonitoringProfile(name, spec) => {
                let map = match self.relisting_monitoring_profiles.as_mut() {
                    Some(relist) => relist,
                    None => &mut self.shared.monitoring_profiles,
                };
                match spec {
                    Some(spec) => map.insert(name, spec),
                    None => map.remove(&name),
                };
            }
            Update::MonitoringProfilesListed => {
                if let Some(relist) = self.relisting_monitoring_profiles.take() {
                    self.shared.monitoring_profiles = relist;
                }
                self.listed[2] = true;
            }
        }
    }

    /// What the engine should run, once every watch has listed (before that the agent would
    /// report pods as missing their settings that are merely not listed yet).
    pub fn desired(&self) -> Option<Desired> {
        if !self.listed.iter().all(|l| *l) {
            return None;
        }
        let shared = self.spec.as_ref().map(|s| self.shared.relevant_to(s)).unwrap_or_default();
        Some(Desired { spec: self.spec.clone(), generation: self.generation, shared })
    }
}

fn split(nodetrace: Option<(NodeTraceSpec, Option<i64>)>) -> (Option<NodeTraceSpec>, Option<i64>) {
    nodetrace.map_or((None, None), |(spec, generation)| (Some(spec), generation))
}

/// Watches `NodeTrace/<node>` and every PodTraceProfile and MonitoringProfile, and sends each
/// change of what concerns this node to `desired`; `healthy` is true while all three watches
/// work (the `podtrace.kubernetes` health service).
pub async fn watch(
    client: Client,
    node: String,
    desired: watch::Sender<Desired>,
    healthy: watch::Sender<bool>,
) {
    let nodetrace = {
        let api: Api<NodeTrace> = Api::all(client.clone());
        let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
        tagged(0, watcher(api, config).default_backoff(), |e| match e {
            watcher::Event::Apply(nt) | watcher::Event::InitApply(nt) => {
                Some(Update::NodeTrace(Some((nt.spec, nt.metadata.generation))))
            }
            watcher::Event::Delete(_) => Some(Update::NodeTrace(None)),
            watcher::Event::Init => Some(Update::NodeTraceRelist),
            watcher::Event::InitDone => Some(Update::NodeTraceListed),
        })
    };
    let podtrace_profiles = {
        let api: Api<PodTraceProfile> = Api::all(client.clone());
        let key = |p: &PodTraceProfile| PodTraceRef {
            namespace: p.namespace().unwrap_or_default(),
            name: p.name_any(),
        };
        tagged(1, watcher(api, watcher::Config::default()).default_backoff(), move |e| match e {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                Some(Update::PodTraceProfile(key(&p), Some(p.spec)))
            }
            watcher::Event::Delete(p) => Some(Update::PodTraceProfile(key(&p), None)),
            watcher::Event::Init => Some(Update::PodTraceProfilesRelist),
            watcher::Event::InitDone => Some(Update::PodTraceProfilesListed),
        })
    };
    let monitoring_profiles = {
        let api: Api<MonitoringProfile> = Api::all(client);
        tagged(2, watcher(api, watcher::Config::default()).default_backoff(), |e| match e {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                Some(Update::MonitoringProfile(p.name_any(), Some(p.spec)))
            }
            watcher::Event::Delete(p) => Some(Update::MonitoringProfile(p.name_any(), None)),
            watcher::Event::Init => Some(Update::MonitoringProfilesRelist),
            watcher::Event::InitDone => Some(Update::MonitoringProfilesListed),
        })
    };
    let mut events = futures::stream::select(
        futures::stream::select(nodetrace, podtrace_profiles),
        monitoring_profiles,
    );
    let mut sources = Sources::default();
    let mut failing = [false; 3];
    while let Some((which, event)) = events.next().await {
        match event {
            Ok(update) => {
                failing[which] = false;
                let logged = match &update {
                    Update::NodeTrace(Some((_, generation))) => {
                        Some(format!("NodeTrace changed (generation {generation:?})"))
                    }
                    Update::NodeTrace(None) => Some("no NodeTrace: tracing nothing".to_owned()),
                    _ => None,
                };
                sources.apply(update);
                if let Some(next) = sources.desired() {
                    let changed = desired.send_if_modified(|d| {
                        let changed = *d != next;
                        *d = next;
                        changed
                    });
                    if changed && let Some(what) = logged {
                        tracing::info!(node, "{what}");
                    } else if changed {
                        tracing::info!(node, "settings of this node's pods changed");
                    }
                }
            }
            Err(e) => {
                failing[which] = true;
                let what = ["NodeTrace", "PodTraceProfile", "MonitoringProfile"][which];
                tracing::warn!(error = %e, "{what} watch failed; retrying with backoff");
            }
        }
        healthy.send_replace(!failing.iter().any(|f| *f) && sources.desired().is_some());
    }
}

/// The events of one watch as `(which, Update)`, the errors kept for the health report.
fn tagged<K>(
    which: usize,
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    to_update: impl Fn(watcher::Event<K>) -> Option<Update> + Send + 'static,
) -> impl Stream<Item = (usize, Result<Update, watcher::Error>)> + Send + Unpin + 'static
where
    K: Send + 'static,
{
    stream
        .filter_map(move |event| {
            let item = match event {
                Ok(e) => to_update(e).map(Ok),
                Err(e) => Some(Err(e)),
            };
            std::future::ready(item.map(|i| (which, i)))
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use podtrace_api::nodetrace::TracedPod;
    use podtrace_api::podtrace::ProfileRef;
    use podtrace_api::podtraceprofile::ProfileChoice;
    use podtrace_api::presets::Preset;

    fn web() -> PodTraceRef {
        PodTraceRef { namespace: "shop".into(), name: "web".into() }
    }

    fn spec() -> NodeTraceSpec {
        let pod = TracedPod {
            uid: "u".into(),
            namespace: "shop".into(),
            name: "p".into(),
            requested_by: vec![web()],
            ..Default::default()
        };
        NodeTraceSpec { pods: vec![pod], ..Default::default() }
    }

    fn by_ref(name: &str) -> PodTraceProfileSpec {
        PodTraceProfileSpec {
            profiles: vec![ProfileChoice {
                profile_ref: Some(ProfileRef { name: name.into() }),
                ..Default::default()
            }],
        }
    }

    fn listed() -> Sources {
        let mut s = Sources::default();
        for u in [
            Update::NodeTraceListed,
            Update::PodTraceProfilesListed,
            Update::MonitoringProfilesListed,
        ] {
            assert_eq!(s.desired(), None, "not every watch has listed");
            s.apply(u);
        }
        s
    }

    #[test]
    fn nothing_is_desired_before_every_watch_listed_then_only_what_the_pods_name() {
        let mut s = Sources::default();
        s.apply(Update::NodeTrace(Some((spec(), Some(3)))));
        s.apply(Update::PodTraceProfile(web(), Some(by_ref("fast"))));
        s.apply(Update::MonitoringProfile("fast".into(), Some(Preset::Minimal.spec())));
        s.apply(Update::MonitoringProfile("unused".into(), Some(Preset::Batch.spec())));
        assert_eq!(s.desired(), None);
        for u in [
            Update::NodeTraceListed,
            Update::PodTraceProfilesListed,
            Update::MonitoringProfilesListed,
        ] {
            s.apply(u);
        }
        let d = s.desired().unwrap();
        assert_eq!((d.spec, d.generation), (Some(spec()), Some(3)));
        assert_eq!(d.shared.podtrace_profiles.keys().collect::<Vec<_>>(), [&web()]);
        assert_eq!(d.shared.monitoring_profiles.keys().collect::<Vec<_>>(), ["fast"]);

        // An edit of a profile no pod here uses changes nothing the engine sees.
        let before = s.desired();
        s.apply(Update::MonitoringProfile("unused".into(), Some(Preset::Intensive.spec())));
        assert_eq!(s.desired(), before);
        // An edit of one it uses does; so does a PodTraceProfile naming another profile.
        s.apply(Update::MonitoringProfile("fast".into(), Some(Preset::Intensive.spec())));
        assert_ne!(s.desired(), before);
        s.apply(Update::PodTraceProfile(web(), Some(by_ref("unused"))));
        assert_eq!(
            s.desired().unwrap().shared.monitoring_profiles.keys().collect::<Vec<_>>(),
            ["unused"]
        );
    }

    #[test]
    fn a_relist_forgets_objects_deleted_while_the_watch_was_down() {
        let mut s = listed();
        s.apply(Update::NodeTrace(Some((spec(), Some(1)))));
        s.apply(Update::PodTraceProfile(web(), Some(by_ref("fast"))));
        s.apply(Update::MonitoringProfile("fast".into(), Some(Preset::Minimal.spec())));
        s.apply(Update::PodTraceProfilesRelist);
        assert_eq!(
            s.desired().unwrap().shared.podtrace_profiles.len(),
            1,
            "kept during the relist"
        );
        s.apply(Update::PodTraceProfilesListed);
        assert!(s.desired().unwrap().shared.podtrace_profiles.is_empty());
        s.apply(Update::MonitoringProfilesRelist);
        s.apply(Update::MonitoringProfile("fast".into(), Some(Preset::Batch.spec())));
        s.apply(Update::MonitoringProfilesListed);
        s.apply(Update::PodTraceProfile(web(), Some(by_ref("fast"))));
        assert_eq!(s.desired().unwrap().shared.monitoring_profiles["fast"], Preset::Batch.spec());
        // A relist of the NodeTrace keeps the spec until it is done; one that finds none clears it.
        s.apply(Update::NodeTraceRelist);
        assert_eq!(s.desired().unwrap().spec, Some(spec()));
        s.apply(Update::NodeTraceListed);
        assert_eq!(s.desired().unwrap(), Desired::default(), "no NodeTrace: nothing, no settings");
    }
}
