//! Where the kubelet and the container runtime put a pod's containers, for every combination of
//! cgroup driver (systemd, cgroupfs), QoS class and runtime (containerd, CRI-O, Docker).
//!
//! ```text
//!  systemd:  /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope
//!  cgroupfs: /kubepods/burstable/pod<uid>/<id>
//! ```
//!
//! (Guaranteed pods sit directly under kubepods; the systemd driver writes the pod UID with `_`
//! for `-` because `-` separates the slice hierarchy in unit names.)

/// A container runtime, from the scheme of the kubelet's container ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// `containerd://`
    Containerd,
    /// `cri-o://`
    CriO,
    /// `docker://`
    Docker,
}

/// A pod's QoS class, which decides the parent cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QosClass {
    /// Directly under kubepods.
    Guaranteed,
    /// Under kubepods/burstable.
    Burstable,
    /// Under kubepods/besteffort.
    BestEffort,
}

impl QosClass {
    /// All three, in the order tried when the class is unknown.
    pub const ALL: [QosClass; 3] =
        [QosClass::Burstable, QosClass::BestEffort, QosClass::Guaranteed];

    /// The class from the pod's `status.qosClass`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Guaranteed" => Some(Self::Guaranteed),
            "Burstable" => Some(Self::Burstable),
            "BestEffort" => Some(Self::BestEffort),
            _ => None,
        }
    }

    fn dir(self) -> Option<&'static str> {
        match self {
            QosClass::Guaranteed => None,
            QosClass::Burstable => Some("burstable"),
            QosClass::BestEffort => Some("besteffort"),
        }
    }
}

/// The kubelet's cgroup driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// Slices and scopes managed by systemd.
    Systemd,
    /// Plain directories.
    Cgroupfs,
}

/// A kubelet container ID such as `containerd://4f2a…` split into runtime and ID; `None` when
/// the scheme is unknown or the ID is empty.
pub fn parse_runtime_id(runtime_id: &str) -> Option<(Runtime, &str)> {
    let (scheme, id) = runtime_id.split_once("://")?;
    let runtime = match scheme {
        "containerd" => Runtime::Containerd,
        "cri-o" | "crio" => Runtime::CriO,
        "docker" => Runtime::Docker,
        _ => return None,
    };
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric())).then_some((runtime, id))
}

/// The relative cgroup path of a pod.
pub fn pod_path(driver: Driver, qos: QosClass, uid: &str) -> String {
    match driver {
        Driver::Systemd => {
            let uid = uid.replace('-', "_");
            match qos.dir() {
                None => format!("/kubepods.slice/kubepods-pod{uid}.slice"),
                Some(q) => {
                    format!("/kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{uid}.slice")
                }
            }
        }
        Driver::Cgroupfs => match qos.dir() {
            None => format!("/kubepods/pod{uid}"),
            Some(q) => format!("/kubepods/{q}/pod{uid}"),
        },
    }
}

/// The relative cgroup path of a container.
pub fn container_path(
    driver: Driver,
    qos: QosClass,
    uid: &str,
    runtime: Runtime,
    id: &str,
) -> String {
    let leaf = match (driver, runtime) {
        (Driver::Systemd, Runtime::Containerd) => format!("cri-containerd-{id}.scope"),
        (Driver::Systemd, Runtime::CriO) => format!("crio-{id}.scope"),
        (Driver::Systemd, Runtime::Docker) => format!("docker-{id}.scope"),
        (Driver::Cgroupfs, Runtime::CriO) => format!("crio-{id}"),
        (Driver::Cgroupfs, Runtime::Containerd | Runtime::Docker) => id.to_owned(),
    };
    format!("{}/{leaf}", pod_path(driver, qos, uid))
}

/// Every path a container may have under the kubelet's cgroupRoot `root` (`/` by default), the
/// known QoS class first (or all three when unknown), systemd before cgroupfs.
pub fn container_candidates(
    root: &str,
    qos: Option<QosClass>,
    uid: &str,
    runtime: Runtime,
    id: &str,
) -> Vec<String> {
    let classes: Vec<QosClass> = match qos {
        Some(q) => vec![q],
        None => QosClass::ALL.to_vec(),
    };
    let root = root.trim_end_matches('/');
    let mut out = Vec::new();
    for driver in [Driver::Systemd, Driver::Cgroupfs] {
        for &q in &classes {
            out.push(format!("{root}{}", container_path(driver, q, uid, runtime, id)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8f2b6c1e-3d4a-4b5c-9e7f-0a1b2c3d4e5f";
    const ID: &str = "4f2a9c0d1e3b5a7c";

    /// Real-world paths as the kubelet and runtimes create them (kubelet pkg/kubelet/cm
    /// cgroup_manager_linux.go; containerd/CRI-O/cri-dockerd systemd scope names).
    #[test]
    fn every_driver_qos_and_runtime_combination_gives_the_kubelet_path() {
        use {Driver::*, QosClass::*, Runtime::*};
        let u = "8f2b6c1e_3d4a_4b5c_9e7f_0a1b2c3d4e5f";
        let table: Vec<(Driver, QosClass, Runtime, String)> = vec![
            (
                Systemd,
                Guaranteed,
                Containerd,
                format!("/kubepods.slice/kubepods-pod{u}.slice/cri-containerd-{ID}.scope"),
            ),
            (
                Systemd,
                Burstable,
                Containerd,
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"
                ),
            ),
            (
                Systemd,
                BestEffort,
                Containerd,
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"
                ),
            ),
            (
                Systemd,
                Guaranteed,
                CriO,
                format!("/kubepods.slice/kubepods-pod{u}.slice/crio-{ID}.scope"),
            ),
            (
                Systemd,
                Burstable,
                CriO,
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/crio-{ID}.scope"
                ),
            ),
            (
                Systemd,
                BestEffort,
                CriO,
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{ID}.scope"
                ),
            ),
            (
                Systemd,
                Guaranteed,
                Docker,
                format!("/kubepods.slice/kubepods-pod{u}.slice/docker-{ID}.scope"),
            ),
            (
                Systemd,
                Burstable,
                Docker,
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/docker-{ID}.scope"
                ),
            ),
            (
                Systemd,
                BestEffort,
                Docker,
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/docker-{ID}.scope"
                ),
            ),
            (Cgroupfs, Guaranteed, Containerd, format!("/kubepods/pod{UID}/{ID}")),
            (Cgroupfs, Burstable, Containerd, format!("/kubepods/burstable/pod{UID}/{ID}")),
            (Cgroupfs, BestEffort, Containerd, format!("/kubepods/besteffort/pod{UID}/{ID}")),
            (Cgroupfs, Guaranteed, CriO, format!("/kubepods/pod{UID}/crio-{ID}")),
            (Cgroupfs, Burstable, CriO, format!("/kubepods/burstable/pod{UID}/crio-{ID}")),
            (Cgroupfs, BestEffort, CriO, format!("/kubepods/besteffort/pod{UID}/crio-{ID}")),
            (Cgroupfs, Guaranteed, Docker, format!("/kubepods/pod{UID}/{ID}")),
            (Cgroupfs, Burstable, Docker, format!("/kubepods/burstable/pod{UID}/{ID}")),
            (Cgroupfs, BestEffort, Docker, format!("/kubepods/besteffort/pod{UID}/{ID}")),
        ];
        for (driver, qos, runtime, want) in table {
            assert_eq!(
                container_path(driver, qos, UID, runtime, ID),
                want,
                "{driver:?} {qos:?} {runtime:?}"
            );
        }
    }

    #[test]
    fn runtime_ids_parse_by_scheme_and_reject_junk() {
        assert_eq!(parse_runtime_id("containerd://abc123"), Some((Runtime::Containerd, "abc123")));
        assert_eq!(parse_runtime_id("cri-o://abc123"), Some((Runtime::CriO, "abc123")));
        assert_eq!(parse_runtime_id("docker://abc123"), Some((Runtime::Docker, "abc123")));
        assert_eq!(parse_runtime_id("rkt://abc"), None);
        assert_eq!(parse_runtime_id("containerd://"), None);
        assert_eq!(parse_runtime_id("containerd://../../etc"), None);
        assert_eq!(parse_runtime_id("abc"), None);
    }

    #[test]
    fn unknown_qos_tries_all_three_classes_under_both_drivers() {
        let c = container_candidates("/", None, UID, Runtime::Containerd, ID);
        assert_eq!(c.len(), 6);
        assert!(c[0].starts_with("/kubepods.slice/kubepods-burstable.slice"));
        assert!(c[5].starts_with(&format!("/kubepods/pod{UID}")));
        assert_eq!(
            container_candidates("/", Some(QosClass::Guaranteed), UID, Runtime::CriO, ID).len(),
            2
        );
        assert_eq!(QosClass::parse("Burstable"), Some(QosClass::Burstable));
    }

    #[test]
    fn a_kubelet_cgroup_root_prefixes_every_candidate() {
        for root in ["/kubelet", "/kubelet/"] {
            let c =
                container_candidates(root, Some(QosClass::Burstable), UID, Runtime::Containerd, ID);
            assert_eq!(c[1], format!("/kubelet/kubepods/burstable/pod{UID}/{ID}"), "{root}");
        }
        assert_eq!(QosClass::parse("nope"), None);
    }
}
