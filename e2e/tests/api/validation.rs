//! Invalid objects are rejected by the CRD schema and its CEL rules with a message that names
//! the offending field, the way `kubectl apply` shows it to a user.

use podtrace_e2e::with_crds;

const PROFILE: &str = "apiVersion: podtrace.dev/v1alpha1\nkind: MonitoringProfile\nmetadata: {name: invalid-profile}\nspec: ";
const TRACE: &str =
    "apiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {name: invalid-trace}\nspec: ";
const NODE: &str =
    "apiVersion: podtrace.dev/v1alpha1\nkind: NodeTrace\nmetadata: {name: invalid-node}\nspec: ";
const SHARED: &str = "apiVersion: podtrace.dev/v1alpha1\nkind: PodTraceProfile\nmetadata: {name: invalid-shared}\nspec: ";

/// (case, kind prefix, spec, substrings the error must contain: the field path first).
const CASES: &[(&str, &str, &str, &[&str])] = &[
    ("zero interval", PROFILE, "{interval: 0s}", &["spec.interval", "between 1s and 1h"]),
    ("negative interval", PROFILE, "{interval: -5s}", &["spec.interval", "between 1s and 1h"]),
    ("interval above 1h", PROFILE, "{interval: 61m}", &["spec.interval", "between 1s and 1h"]),
    (
        "interval without unit",
        PROFILE,
        "{interval: \"10\"}",
        &["spec.interval", "between 1s and 1h"],
    ),
    ("interval of wrong type", PROFILE, "{interval: 10}", &["spec.interval", "expected string"]),
    (
        "history above 10000",
        PROFILE,
        "{history: {size: 10001}}",
        &["spec.history.size", "between 0 and 10000"],
    ),
    (
        "negative history",
        PROFILE,
        "{history: {size: -1}}",
        &["spec.history.size", "between 0 and 10000"],
    ),
    (
        "history of wrong type",
        PROFILE,
        "{history: {size: many}}",
        &["spec.history.size", "expected numeric"],
    ),
    (
        "warning above critical",
        PROFILE,
        "{resourceLimits: {warningPercent: 90, criticalPercent: 80}}",
        &["spec.resourceLimits.criticalPercent", "greater than resourceLimits.warningPercent"],
    ),
    (
        "critical equal to emergency",
        PROFILE,
        "{resourceLimits: {criticalPercent: 95, emergencyPercent: 95}}",
        &["spec.resourceLimits.emergencyPercent", "greater than resourceLimits.criticalPercent"],
    ),
    (
        "emergency above 100",
        PROFILE,
        "{resourceLimits: {emergencyPercent: 101}}",
        &["spec.resourceLimits.emergencyPercent", "between 1 and 100"],
    ),
    (
        "series budget too small",
        PROFILE,
        "{maxSeriesPerPod: 5}",
        &["spec.maxSeriesPerPod", "between 10 and 100000"],
    ),
    (
        "series budget too large",
        PROFILE,
        "{maxSeriesPerPod: 1000000}",
        &["spec.maxSeriesPerPod", "between 10 and 100000"],
    ),
    (
        "probes enabled but none listed",
        PROFILE,
        "{probes: {enabled: true, include: []}}",
        &["spec.probes.include", "at least one probe"],
    ),
    (
        "unknown probe",
        PROFILE,
        "{probes: {include: [tcpRtt, magic]}}",
        &["spec.probes.include[1]", "Unsupported value: \"magic\""],
    ),
    (
        "invalid pod label key",
        PROFILE,
        "{labels: {podLabels: [app, \"bad key!\"]}}",
        &["spec.labels.podLabels", "valid label keys"],
    ),
    (
        "unknown field",
        PROFILE,
        "{colect: {cpu: true}}",
        &["spec.colect", "field not declared in schema"],
    ),
    (
        "both profileRef and profile",
        TRACE,
        "{selector: {}, profileRef: {name: standard}, profile: {interval: 5s}}",
        &["spec.profile", "at most one of spec.profileRef and spec.profile"],
    ),
    (
        "duration without unit",
        TRACE,
        "{selector: {}, duration: \"15\"}",
        &["spec.duration", "duration must be a duration between 1s and 8760h"],
    ),
    (
        "duration below 1s",
        TRACE,
        "{selector: {}, duration: 500ms}",
        &["spec.duration", "between 1s and 8760h"],
    ),
    (
        "negative duration",
        TRACE,
        "{selector: {}, duration: -15m}",
        &["spec.duration", "between 1s and 8760h"],
    ),
    (
        "namespaceSelector with unknown operator",
        TRACE,
        "{selector: {}, namespaceSelector: {matchExpressions: [{key: team, operator: Like, values: [a]}]}}",
        &["spec.namespaceSelector", "namespaceSelector.matchExpressions[].operator must be one of"],
    ),
    (
        "namespaceSelector with a bad label key",
        TRACE,
        "{selector: {}, namespaceSelector: {matchLabels: {\"-team\": a}}}",
        &[
            "spec.namespaceSelector.matchLabels",
            "namespaceSelector.matchLabels keys must be label keys",
        ],
    ),
    (
        "missing selector",
        TRACE,
        "{profileRef: {name: standard}}",
        &["spec.selector", "Required value"],
    ),
    (
        "selector with unknown operator",
        TRACE,
        "{selector: {matchExpressions: [{key: app, operator: Like, values: [a]}]}}",
        &["spec.selector", "operator must be one of In, NotIn, Exists, DoesNotExist"],
    ),
    (
        "selector In without values",
        TRACE,
        "{selector: {matchExpressions: [{key: app, operator: In}]}}",
        &["spec.selector", "values must be non-empty for In and NotIn"],
    ),
    (
        "selector Exists with values",
        TRACE,
        "{selector: {matchExpressions: [{key: app, operator: Exists, values: [x]}]}}",
        &["spec.selector", "empty for Exists and DoesNotExist"],
    ),
    (
        "selector matchLabels as a list",
        TRACE,
        "{selector: {matchLabels: [app]}}",
        &["spec.selector.matchLabels", "expected map"],
    ),
    (
        "empty profileRef name",
        TRACE,
        "{selector: {}, profileRef: {name: \"\"}}",
        &["spec.profileRef.name", "at least 1 chars long"],
    ),
    (
        "invalid inline profile",
        TRACE,
        "{selector: {}, profile: {interval: 0s, history: {size: 20000}}}",
        &["spec.profile.interval", "spec.profile.history.size"],
    ),
    (
        "paused of wrong type",
        TRACE,
        "{selector: {}, paused: sometimes}",
        &["spec.paused", "expected boolean"],
    ),
    (
        "container name that is no DNS label",
        TRACE,
        "{selector: {}, containers: [app, App_Container]}",
        &["spec.containers", "DNS labels"],
    ),
    (
        "container name longer than a DNS label",
        TRACE,
        "{selector: {}, containers: [aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]}",
        &["spec.containers[0]", "Too long"],
    ),
    (
        "selector with an invalid label key",
        TRACE,
        "{selector: {matchLabels: {\"bad key!\": web}}}",
        &["spec.selector.matchLabels", "keys must be label keys"],
    ),
    (
        "selector with a label key prefix that is no DNS subdomain",
        TRACE,
        "{selector: {matchLabels: {\"Example.com/app\": web}}}",
        &["spec.selector.matchLabels", "keys must be label keys"],
    ),
    (
        "selector with an invalid label value",
        TRACE,
        "{selector: {matchLabels: {app: \"-web\"}}}",
        &["spec.selector.matchLabels", "values must be label values"],
    ),
    (
        "selector expression with an invalid key",
        TRACE,
        "{selector: {matchExpressions: [{key: \"a/b/c\", operator: Exists}]}}",
        &["spec.selector.matchExpressions", "key must be a label key"],
    ),
    (
        "selector expression with an invalid value",
        TRACE,
        "{selector: {matchExpressions: [{key: app, operator: In, values: [web, \"bad value!\"]}]}}",
        &["spec.selector.matchExpressions", "values must be label values"],
    ),
    (
        "NodeTrace pod line without uid",
        NODE,
        "{pods: [\"shop/web-1 uid=u settings=k\", \"shop/web-2 settings=k\"]}",
        &["spec.pods[1]", "should match"],
    ),
    (
        "NodeTrace pod line without namespace",
        NODE,
        "{pods: [\"web-1 uid=u settings=k\"]}",
        &["spec.pods[0]", "should match"],
    ),
    (
        "PodTraceProfile entry with both a reference and settings",
        SHARED,
        "{profiles: [{profileRef: {name: standard}, profile: {interval: 5s}}]}",
        &["spec.profiles[0]", "set exactly one of profiles[].profileRef and profiles[].profile"],
    ),
    (
        "PodTraceProfile entry with neither",
        SHARED,
        "{profiles: [{ownerKinds: [ReplicaSet]}]}",
        &["spec.profiles[0]", "set exactly one of profiles[].profileRef and profiles[].profile"],
    ),
    (
        "PodTraceProfile without entries",
        SHARED,
        "{profiles: []}",
        &["spec.profiles", "at least 1 items"],
    ),
];

#[tokio::test]
async fn invalid_objects_are_rejected_with_a_message_naming_the_field() {
    let cp = with_crds();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "validation").await.unwrap();
    assert!(CASES.len() >= 15);
    let mut failures = Vec::new();
    for (case, kind, spec, expected) in CASES {
        let manifest = format!("{kind}{spec}\n");
        let out =
            cp.kubectl(&["apply", "--server-side", "-n", &ns.name, "-f", "-"], Some(&manifest));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{case}: accepted, expected a rejection"));
            continue;
        }
        for want in *expected {
            if !stderr.contains(want) {
                failures.push(format!("{case}: error lacks {want:?}: {}", stderr.trim()));
            }
        }
    }
    // Nothing was stored by the rejected applies.
    let left = cp
        .kubectl_ok(&[
            "get",
            "podtraces,monitoringprofiles,podtraceprofiles",
            "-n",
            &ns.name,
            "-o",
            "name",
        ])
        .unwrap()
        + &cp.kubectl_ok(&["get", "nodetraces", "-o", "name"]).unwrap();
    assert!(!left.contains("invalid-"), "rejected objects were stored: {left}");
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
    ns.delete().await.unwrap();
}

/// What Kubernetes accepts in a pod's labels and container names is accepted here too.
#[tokio::test]
async fn valid_selectors_and_container_names_are_accepted() {
    let cp = with_crds();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "validation-ok").await.unwrap();
    let manifest = format!(
        "{TRACE}{{selector: {{matchLabels: {{app.kubernetes.io/name: web, tier: \"\", a: {}}}, \
         matchExpressions: [{{key: example.com/role, operator: In, values: [a, b-c.d_e]}}, \
         {{key: debug, operator: DoesNotExist}}]}}, containers: [app, istio-proxy, x1]}}\n",
        "v".repeat(63)
    );
    let out = cp.kubectl(&["apply", "--server-side", "-n", &ns.name, "-f", "-"], Some(&manifest));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ns.delete().await.unwrap();
}
