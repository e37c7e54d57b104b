//! The agent's `/metrics` with `--metrics-kube-auth` against the real API server: tokens are
//! reviewed by TokenReview and SubjectAccessReview, refusals carry the security headers, and a
//! client storming with new tokens is rate-limited before any review is asked for.

use podtrace_e2e::{free_port, with_crds};
use std::{
    io::{Read, Write},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

struct Agent(Child);
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /metrics` with `token`: the status code and the raw head.
fn get(port: u16, token: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n{auth}\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let head = out.split("\r\n\r\n").next().unwrap_or_default().to_lowercase();
    (status, head)
}

#[tokio::test]
async fn metrics_auth_reviews_tokens_after_the_rate_limit_and_refusals_carry_the_headers() {
    let cp = with_crds();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "metrics-auth").await.unwrap();
    let role = format!("podtrace-e2e-metrics-reader-{}", std::process::id());
    let manifest = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: reader, namespace: {ns}}}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: stranger, namespace: {ns}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {role}}}\n\
         rules: [{{nonResourceURLs: [/metrics], verbs: [get]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {role}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}\n\
         subjects: [{{kind: ServiceAccount, name: reader, namespace: {ns}}}]\n",
        ns = ns.name
    );
    let applied = cp.kubectl(&["apply", "-f", "-"], Some(&manifest));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let token = |sa: &str| cp.kubectl_ok(&["create", "token", sa, "-n", &ns.name]).unwrap();
    let (reader, stranger) = (token("reader"), token("stranger"));

    let (metrics, health, admin) = (free_port(), free_port(), free_port());
    let _agent = Agent(
        Command::new(podtrace_e2e::binary("podtrace-agent"))
            .args(["run", "--metrics-kube-auth", "--ebpf=false"])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .args(["--health-addr", &format!("127.0.0.1:{health}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("NODE_NAME", format!("e2e-metrics-auth-{}", std::process::id()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", metrics)).is_err() {
        assert!(Instant::now() < deadline, "the agent never served /metrics");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let headers = ["x-content-type-options: nosniff", "x-frame-options: deny"];
    let (status, head) = get(metrics, None);
    assert_eq!(status, 401, "{head}");
    assert!(headers.iter().all(|h| head.contains(h)), "security headers on 401: {head}");
    let (status, head) = get(metrics, Some(stranger.trim()));
    assert_eq!(status, 403, "{head}");
    assert!(headers.iter().all(|h| head.contains(h)), "security headers on 403: {head}");
    let (status, head) = get(metrics, Some(reader.trim()));
    assert_eq!(status, 200, "{head}");
    // 3 requests of the 20 of the burst are spent; wait for the bucket to be full again.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // One client sending a new (unknown) token with every request: each that passes the limit
    // costs the API server a TokenReview (403); the limit applies first, so most get 429.
    let started = Instant::now();
    let (mut forbidden, mut limited) = (0usize, 0usize);
    for i in 0..100 {
        match get(metrics, Some(&format!("storm-{i}"))).0 {
            403 => forbidden += 1,
            429 => limited += 1,
            other => panic!("status {other}"),
        }
    }
    let refill = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
    assert!(limited > 0, "no request of the storm was limited");
    assert!(
        forbidden <= 20 + refill,
        "{forbidden} tokens reviewed in {:?}: the limit did not come first",
        started.elapsed()
    );
    let _ = cp.kubectl(&["delete", "clusterrole,clusterrolebinding", &role], None);
    ns.delete().await.unwrap();
}
