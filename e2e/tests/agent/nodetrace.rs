//! The agent as a process against the real API server, with real cgroups laid out as the
//! kubelet lays them out: a hand-made NodeTrace of spec format 1 (what an operator of an
//! earlier version writes) and one of format 2 with its PodTraceProfile and MonitoringProfiles,
//! whose edits the agent follows without any NodeTrace write.

use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use podtrace_api::{
    MonitoringProfile, NodeTrace, NodeTraceSpec, PodTraceProfile,
    nodetrace::{PodSettings, PodTraceRef, TracedContainer, TracedPod},
    profile::MonitoringProfileSpec,
    status::{PodAttachReason, PodAttachState},
};
use podtrace_e2e::{free_port, with_crds};
use std::{
    io::{Read, Write},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The cgroup hierarchies mounted here (v2 and every v1 controller), from mountinfo.
fn hierarchies() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fs = right.split_whitespace().next()?;
            let opts = right.split_whitespace().nth(2)?;
            let wanted = fs == "cgroup2"
                || (fs == "cgroup"
                    && opts.split(',').any(|o| ["memory", "cpu", "cpuacct"].contains(&o)));
            let mount = left.split_whitespace().nth(4)?;
            wanted.then(|| PathBuf::from(mount))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A container cgroup as the kubelet (systemd driver) and containerd create it, with a sleeping
/// process in it; removed on drop.
struct KubeletCgroup {
    dirs: Vec<PathBuf>,
    child: Child,
}

impl KubeletCgroup {
    fn new(pod_uid: &str, container_id: &str) -> Self {
        let u = pod_uid.replace('-', "_");
        let rel = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{container_id}.scope"
        );
        let dirs: Vec<PathBuf> = hierarchies().iter().map(|h| h.join(&rel)).collect();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        let child =
            podtrace_test_support::command_in_cgroups(&dirs, "sleep").arg("600").spawn().unwrap();
        let probe = dirs[0].join("cgroup.procs");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&probe).unwrap_or_default().trim().is_empty() {
            assert!(Instant::now() < deadline, "the process did not enter {}", probe.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { dirs, child }
    }
}

impl Drop for KubeletCgroup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for d in &self.dirs {
            // Remove the scope, then the now empty parents up to the hierarchy root.
            let mut dir = d.clone();
            for _ in 0..4 {
                for _ in 0..50 {
                    if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                if !dir.pop() {
                    break;
                }
            }
        }
    }
}

struct Agent(Child);
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metrics(port: u16) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn pod(uid: &str, name: &str, runtime_id: &str) -> TracedPod {
    TracedPod {
        uid: uid.into(),
        namespace: "shop".into(),
        name: name.into(),
        qos_class: Some("Burstable".into()),
        containers: vec![TracedContainer {
            name: "app".into(),
            runtime_id: Some(runtime_id.into()),
        }],
        settings_key: Some(SETTINGS.into()),
        ..Default::default()
    }
}

/// The key of the one settings entry of the hand-made NodeTrace.
const SETTINGS: &str = "every-second";

async fn wait_status(
    api: &Api<NodeTrace>,
    name: &str,
    what: &str,
    ok: impl Fn(&NodeTrace) -> bool,
) -> NodeTrace {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nt = api.get(name).await.unwrap();
        if ok(&nt) {
            return nt;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {:#?}",
            nt.status
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_hand_made_nodetrace_makes_the_agent_track_the_pods_cgroups_and_write_status() {
    if !podtrace_test_support::require_root(
        "a_hand_made_nodetrace_makes_the_agent_track_the_pods_cgroups_and_write_status",
        "real cgroups",
    ) {
        return;
    }
    let cp = with_crds();
    let client = cp.client().await.unwrap();
    let node = format!("e2e-agent-node-{}", std::process::id());
    let pid = std::process::id();
    let (uid_a, uid_b) = (
        format!("aaaa{pid:08x}-1111-4222-8333-444455556666"),
        format!("bbbb{pid:08x}-1111-4222-8333-444455556666"),
    );
    let (id_a, id_b) = (format!("a1{pid:x}f00d"), format!("b2{pid:x}f00d"));
    let cgroup_a = KubeletCgroup::new(&uid_a, &id_a);

    let api: Api<NodeTrace> = Api::all(client.clone());
    let spec = NodeTraceSpec {
        settings: Some(MonitoringProfileSpec { interval: "1s".into(), ..Default::default() }),
        pod_settings: vec![PodSettings {
            key: SETTINGS.into(),
            settings: MonitoringProfileSpec { interval: "1s".into(), ..Default::default() },
        }],
        pods: vec![
            pod(&uid_a, "web", &format!("containerd://{id_a}")),
            pod(&uid_b, "worker", &format!("containerd://{id_b}")),
        ],
    };
    api.create(&PostParams::default(), &NodeTrace::new(&node, spec.clone())).await.unwrap();

    let (metrics_port, health_port, admin_port) = (free_port(), free_port(), free_port());
    let _agent = Agent(
        Command::new(podtrace_e2e::binary("podtrace-agent"))
            .args(["run", "--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--health-addr", &format!("127.0.0.1:{health_port}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("NODE_NAME", &node)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The cgroup of "web" exists, that of "worker" does not (yet).
    let nt = wait_status(&api, &node, "web attached, worker pending", |nt| {
        nt.status
            .as_ref()
            .is_some_and(|s| s.attached_pods == 1 && s.tracked_pods == 2 && s.pods.len() == 2)
    })
    .await;
    let s = nt.status.unwrap();
    let by_name = |n: &str| s.pods.iter().find(|p| p.name == n).unwrap().clone();
    assert_eq!(by_name("web").state, PodAttachState::Attached);
    assert_eq!(by_name("worker").state, PodAttachState::Pending);
    assert_eq!(by_name("worker").reason, Some(PodAttachReason::CgroupNotFound));
    let kernel = s.kernel.clone().unwrap();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(kernel.release, release.trim());
    // attachTypes: the methods of the probes attached, as status.probes lists them.
    let attached: std::collections::BTreeSet<_> = s
        .probes
        .iter()
        .filter(|p| p.state == podtrace_api::status::ProbeState::Attached)
        .filter_map(|p| p.method)
        .collect();
    assert_eq!(kernel.attach_types, attached.into_iter().collect::<Vec<_>>(), "{:?}", s.probes);
    assert!(s.heartbeat.is_some());
    assert_eq!(s.observed_generation, nt.metadata.generation);
    assert!(s.series > 0);
    assert_eq!(s.spec_format, Some(2), "the agent says it reads format 2 too");
    let managers: Vec<String> = nt
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"podtrace-agent".to_string()), "{managers:?}");

    // The agent serves the pod's cgroup: its memory usage as the cgroup reports it.
    let series = "podtrace_resource_usage_bytes{resource_type=\"memory\",namespace=\"shop\",pod=\"web\",container=\"app\"}";
    let deadline = Instant::now() + Duration::from_secs(20);
    while !metrics(metrics_port).contains(series) {
        assert!(Instant::now() < deadline, "no {series} in /metrics");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        metrics(metrics_port).contains("pod=\"web\",container=\"app\",pid=\""),
        "per-process series of the sleeping process"
    );

    // The missing cgroup appears: the pending pod is retried and attached.
    let cgroup_b = KubeletCgroup::new(&uid_b, &id_b);
    wait_status(&api, &node, "worker attached", |nt| {
        nt.status.as_ref().is_some_and(|s| s.attached_pods == 2)
    })
    .await;

    // A spec change is applied without restart: "web" is no longer traced, its series go away.
    let patch = serde_json::json!({"spec": {"pods": [serde_json::to_value(pod(&uid_b, "worker", &format!("containerd://{id_b}"))).unwrap()]}});
    api.patch(&node, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_status(&api, &node, "one tracked pod", |nt| {
        nt.status.as_ref().is_some_and(|s| s.tracked_pods == 1 && s.attached_pods == 1)
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while metrics(metrics_port).contains("pod=\"web\"") {
        assert!(Instant::now() < deadline, "series of the removed pod are still served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(metrics(metrics_port).contains("pod=\"worker\""));

    api.delete(&node, &DeleteParams::default()).await.unwrap();
    drop(cgroup_a);
    drop(cgroup_b);
}

/// Starts the agent of `node` against `cp`, its metrics on the returned port.
fn start_agent(cp: &podtrace_e2e::ControlPlane, node: &str) -> (Agent, u16) {
    let (metrics_port, health_port, admin_port) = (free_port(), free_port(), free_port());
    let agent = Agent(
        Command::new(podtrace_e2e::binary("podtrace-agent"))
            .args(["run", "--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--health-addr", &format!("127.0.0.1:{health_port}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("NODE_NAME", node)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (agent, metrics_port)
}

/// Waits until the agent's /metrics has a line that contains every one of `parts`.
async fn wait_series(port: u16, what: &str, parts: &[&str]) -> Duration {
    let start = Instant::now();
    loop {
        let m = metrics(port);
        if m.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: no line with {parts:?} in /metrics"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_format_2_nodetrace_takes_its_settings_from_the_podtrace_profile_and_follows_its_edits() {
    if !podtrace_test_support::require_root(
        "a_format_2_nodetrace_takes_its_settings_from_the_podtrace_profile_and_follows_its_edits",
        "real cgroups",
    ) {
        return;
    }
    let cp = with_crds();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "agent-shared").await.unwrap();
    let node = format!("e2e-agent-shared-{}", std::process::id());
    let pid = std::process::id();
    let uid = format!("cccc{pid:08x}-1111-4222-8333-444455556666");
    let id = format!("c3{pid:x}f00d");
    let _cgroup = KubeletCgroup::new(&uid, &id);

    // Two MonitoringProfiles, a PodTraceProfile naming the first, and a NodeTrace whose pod
    // names the PodTrace (by=) and carries two labels; no profile copies any label yet.
    let (plain, tiered) = (format!("{}-plain", ns.name), format!("{}-tiered", ns.name));
    let profiles: Api<MonitoringProfile> = Api::all(client.clone());
    let profile = |name: &str, labels: &[&str]| {
        let spec = MonitoringProfileSpec {
            interval: "1s".into(),
            labels: podtrace_api::profile::LabelSettings {
                process_name: false,
                pod_labels: labels.iter().map(|l| l.to_string()).collect(),
            },
            ..Default::default()
        };
        MonitoringProfile::new(name, spec)
    };
    profiles.create(&PostParams::default(), &profile(&plain, &[])).await.unwrap();
    profiles.create(&PostParams::default(), &profile(&tiered, &["tier"])).await.unwrap();
    let ptps: Api<PodTraceProfile> = Api::namespaced(client.clone(), &ns.name);
    let ptp = |name: &str| {
        serde_json::json!({"apiVersion": "podtrace.dev/v1alpha1", "kind": "PodTraceProfile",
            "metadata": {"name": "web"}, "spec": {"profiles": [{"profileRef": {"name": name}}]}})
    };
    let pp = PatchParams::apply("e2e").force();
    ptps.patch("web", &pp, &Patch::Apply(ptp(&plain))).await.unwrap();
    let line = TracedPod {
        uid: uid.clone(),
        namespace: ns.name.clone(),
        name: "web".into(),
        qos_class: Some("Burstable".into()),
        owner_kind: Some("ReplicaSet".into()),
        containers: vec![TracedContainer {
            name: "app".into(),
            runtime_id: Some(format!("containerd://{id}")),
        }],
        labels: [
            ("team".to_string(), "blue".to_string()),
            ("tier".to_string(), "front".to_string()),
        ]
        .into(),
        requested_by: vec![PodTraceRef { namespace: ns.name.clone(), name: "web".into() }],
        ..Default::default()
    };
    let nodetraces: Api<NodeTrace> = Api::all(client.clone());
    let spec = NodeTraceSpec { pods: vec![line], ..Default::default() };
    let created =
        nodetraces.create(&PostParams::default(), &NodeTrace::new(&node, spec)).await.unwrap();

    let (_agent, port) = start_agent(cp, &node);
    let nt = wait_status(&nodetraces, &node, "web attached", |nt| {
        nt.status.as_ref().is_some_and(|s| s.attached_pods == 1)
    })
    .await;
    assert_eq!(nt.status.unwrap().spec_format, Some(2));
    let pod = "pod=\"web\",container=\"app\"";
    wait_series(port, "memory of web", &["podtrace_resource_usage_bytes{", pod]).await;
    assert!(!metrics(port).contains("label_team="), "no profile copies team yet");

    // An edit of the MonitoringProfile reaches the agent with no write of anything else.
    let mut edited = profiles.get(&plain).await.unwrap();
    edited.spec.labels.pod_labels = vec!["team".into()];
    edited.metadata.managed_fields = None;
    profiles.replace(&plain, &PostParams::default(), &edited).await.unwrap();
    let took =
        wait_series(port, "team after the profile edit", &[pod, "label_team=\"blue\""]).await;
    eprintln!("MonitoringProfile edit → agent's series: {took:?}");

    // The PodTraceProfile names another profile: the agent follows it too.
    ptps.patch("web", &pp, &Patch::Apply(ptp(&tiered))).await.unwrap();
    wait_series(port, "tier after the PodTraceProfile edit", &[pod, "label_tier=\"front\""]).await;

    // A PodTraceProfile that goes away leaves the pod waiting for its settings (Pending, with
    // the object named), not failed.
    ptps.delete("web", &DeleteParams::default()).await.unwrap();
    let nt = wait_status(&nodetraces, &node, "web pending without settings", |nt| {
        nt.status.as_ref().is_some_and(|s| {
            s.attach_results().next().is_some_and(|p| p.state == PodAttachState::Pending)
        })
    })
    .await;
    let status = nt.status.unwrap();
    assert!(status.pods.is_empty() && status.pod_results.len() == 1, "format 2: results as lines");
    let p = status.attach_results().next().unwrap().clone();
    assert_eq!(p.reason, Some(PodAttachReason::SettingsNotFound));
    assert!(p.message.unwrap().contains(&format!("PodTraceProfile {}/web", ns.name)));
    let unchanged = nodetraces.get(&node).await.unwrap();
    assert_eq!(
        unchanged.metadata.generation, created.metadata.generation,
        "the NodeTrace spec was never written"
    );

    nodetraces.delete(&node, &DeleteParams::default()).await.unwrap();
    for name in [&plain, &tiered] {
        profiles.delete(name, &DeleteParams::default()).await.unwrap();
    }
    ns.delete().await.unwrap();
}
