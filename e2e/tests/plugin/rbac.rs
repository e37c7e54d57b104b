use super::plugin_as;
use crate::operator::fixture::Fixture;
use serde_json::{Value, json};
use std::path::PathBuf;

/// The RBAC of docs/guide.md ("RBAC for kubectl podtrace"), its Role in `namespace`.
fn documented_rbac(namespace: &str) -> String {
    let guide = std::fs::read_to_string(podtrace_e2e::repo_root().join("docs/guide.md")).unwrap();
    let section = guide.split_once("**RBAC for kubectl podtrace.**").expect("the guide's RBAC").1;
    let yaml = section.split_once("```yaml\n").unwrap().1.split_once("```").unwrap().0;
    yaml.replace("namespace: podtrace-system", &format!("namespace: {namespace}"))
}

/// A kubeconfig of the control plane whose user is ServiceAccount `sa` of `namespace` (a
/// token from the TokenRequest API).
fn kubeconfig_of(fx: &Fixture, sa: &str) -> PathBuf {
    let ns = fx.name();
    let token = fx.cp.kubectl_ok(&["create", "token", sa, "-n", ns]).unwrap();
    let admin = std::fs::read_to_string(&fx.cp.kubeconfig).unwrap();
    let mut config: Value = serde_yaml::from_str(&admin).unwrap();
    config["users"][0]["user"] = json!({"token": token.trim()});
    let path = fx.cp.dir.join(format!("kubeconfig-{ns}-{sa}"));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn the_documented_rbac_is_enough_and_what_is_refused_is_named() {
    let fx = Fixture::without_agents("plugin-rbac").await;
    let ns = fx.name().to_owned();
    fx.podtrace("web", json!({"selector": {"matchLabels": {"app": "web"}}})).await;
    // viewer: the guide's ClusterRole and Role; narrow: list podtraces in the namespace, nothing
    // else.
    let bindings = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: viewer, namespace: {ns}}}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: narrow, namespace: {ns}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {ns}-plugin}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: podtrace-kubectl-plugin}}\n\
         subjects: [{{kind: ServiceAccount, name: viewer, namespace: {ns}}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: plugin, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: podtrace-kubectl-plugin}}\n\
         subjects: [{{kind: ServiceAccount, name: viewer, namespace: {ns}}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: narrow, namespace: {ns}}}\n\
         rules: [{{apiGroups: [podtrace.dev], resources: [podtraces], verbs: [get, list]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: narrow, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: narrow}}\n\
         subjects: [{{kind: ServiceAccount, name: narrow, namespace: {ns}}}]\n"
    );
    let manifest = format!("{}\n---\n{bindings}", documented_rbac(&ns));
    let applied = fx.cp.kubectl(&["apply", "-f", "-"], Some(&manifest));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let as_user = |sa: &str, args: &[&str]| plugin_as(&kubeconfig_of(&fx, sa), args).unwrap();

    // The guide's RBAC: status and health read everything (no operator runs here: Unhealthy).
    let status = as_user("viewer", &["status", "-n", &ns, "-o", "json"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let report: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(report["podTraces"][0]["name"], "web");
    assert!(report.get("unreadable").is_none(), "{report:#}");
    let health = as_user("viewer", &["health", "--system-namespace", &ns, "-o", "json"]);
    assert_eq!(health.code, 3, "{}", health.stderr);
    let report: Value = serde_json::from_str(&health.stdout).unwrap();
    assert!(!report.to_string().contains("403"), "nothing refused: {report:#}");
    assert_eq!(report["operator"]["level"], "Unhealthy");

    // Allowed podtraces only: health and top cannot find the agents, and say why.
    for command in [
        vec!["health", "--system-namespace", &ns],
        vec!["top", "--system-namespace", &ns, "--once"],
    ] {
        let refused = as_user("narrow", &command);
        assert_eq!(refused.code, 1, "{command:?}");
        let what = format!(
            "list pods app.kubernetes.io/name=podtrace,app.kubernetes.io/component=agent in {ns}: 403 Forbidden"
        );
        assert!(
            refused.stderr.contains(&what) && refused.stderr.contains("RBAC for kubectl podtrace"),
            "{command:?}: {}",
            refused.stderr
        );
    }

    // Without list nodetraces, status still prints the PodTraces and names what is missing.
    let partial = as_user("narrow", &["status", "-n", &ns, "-o", "json"]);
    assert_eq!(partial.code, 0, "{}", partial.stderr);
    let report: Value = serde_json::from_str(&partial.stdout).unwrap();
    assert_eq!(report["podTraces"][0]["name"], "web");
    let unreadable = report["unreadable"][0].as_str().unwrap();
    assert!(unreadable.starts_with("list nodetraces: 403 Forbidden"), "{unreadable}");
    let table = as_user("narrow", &["status", "-n", &ns]);
    assert!(table.stdout.contains("warning: list nodetraces: 403 Forbidden"), "{}", table.stdout);
    let all = as_user("narrow", &["status", "-A"]);
    assert_eq!(all.code, 1);
    assert!(
        all.stderr.contains("list podtraces in any namespace: 403 Forbidden"),
        "{}",
        all.stderr
    );
}
