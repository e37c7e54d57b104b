use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use podtrace_api::{
    NodeTrace, NodeTraceSpec,
    nodetrace::{PodSettings, TracedContainer, TracedPod},
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
        settings_key: SETTINGS.into(),
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
        settings: MonitoringProfileSpec { interval: "1s".into(), ..Default::default() },
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
