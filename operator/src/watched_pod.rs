//! What the Pod watch decodes: the few fields of a Pod the index projects, and nothing else.
//!
//! `k8s_openapi`'s `Pod` decodes every field of every list page and watch event (managed fields,
//! annotations, volumes, probes, conditions…), about 3 KiB of allocations per pod that are
//! dropped right after the projection, and that glibc's malloc then keeps. `WatchedPod` is a
//! `Resource` of its own for the same `v1/pods` endpoint whose decoder skips everything the
//! projection does not read, so a page of 500 pods costs a few hundred KiB instead of a few MiB,
//! and decoding is faster than a raw LIST of `Pod`s.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// A Pod as the operator's watch decodes it.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
pub struct WatchedPod {
    /// name, namespace, uid, resourceVersion, labels and ownerReferences only.
    #[serde(default, deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    /// nodeName and the container names.
    #[serde(default)]
    pub spec: Option<WatchedPodSpec>,
    /// phase, QoS class and the containers' runtime IDs.
    #[serde(default)]
    pub status: Option<WatchedPodStatus>,
}

/// `spec` of a [`WatchedPod`].
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct WatchedPodSpec {
    /// The node the pod is bound to.
    pub node_name: Option<String>,
    /// The containers, by name.
    pub containers: Option<Vec<WatchedContainer>>,
}

/// A container of `spec.containers`, by name.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
pub struct WatchedContainer {
    /// Container name.
    pub name: String,
}

/// `status` of a [`WatchedPod`].
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct WatchedPodStatus {
    /// Pending, Running, Succeeded, Failed or Unknown.
    pub phase: Option<String>,
    /// Guaranteed, Burstable or BestEffort.
    pub qos_class: Option<String>,
    /// Name and runtime ID of each started container.
    pub container_statuses: Option<Vec<WatchedContainerStatus>>,
}

/// An entry of `status.containerStatuses`.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct WatchedContainerStatus {
    /// Container name.
    pub name: String,
    /// Runtime ID, e.g. `containerd://4f2a…`.
    #[serde(rename = "containerID")]
    pub container_id: Option<String>,
}

impl k8s_openapi::Resource for WatchedPod {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Pod";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "pods";
    type Scope = NamespaceResourceScope;
}

impl k8s_openapi::Metadata for WatchedPod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The metadata fields the projection (and the watcher) read; annotations and managed fields,
/// the bulk of most Pods' metadata, are skipped without being allocated.
fn lean_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct Lean {
        name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        labels: Option<BTreeMap<String, String>>,
        owner_references: Option<Vec<OwnerReference>>,
    }
    let m = Lean::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        labels: m.labels,
        owner_references: m.owner_references,
        ..Default::default()
    })
}
