use podtrace_e2e::with_crds;

/// `kubectl explain` output with its line wrapping undone.
fn explain(field: &str) -> String {
    let text = with_crds().kubectl_ok(&["explain", field]).unwrap();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn kubectl_explain_shows_the_field_docs() {
    let selector = explain("podtrace.spec.selector");
    assert!(
        selector.contains("Label selector over the pods of this PodTrace's namespace"),
        "{selector}"
    );
    let interval = explain("monitoringprofile.spec.interval");
    assert!(interval.contains("between 1s and 1h"), "{interval}");
    let status = explain("nodetrace.status.probes.method");
    assert!(status.contains("How a probe is attached to the kernel"), "{status}");
    let pods = explain("nodetrace.spec.pods");
    assert!(pods.contains("A traced pod, one line: `<namespace>/<name> uid=<uid>"), "{pods}");
    let kind = explain("podtrace");
    assert!(kind.contains("PodTrace selects pods of its namespace by label"), "{kind}");
    let shared = explain("podtraceprofile");
    assert!(
        shared.contains("PodTraceProfile is the monitoring profile of one PodTrace"),
        "{shared}"
    );
    let choices = explain("podtraceprofile.spec.profiles");
    assert!(choices.contains("first match wins"), "{choices}");
    assert!(pods.contains("by= gives a pod of its owner kind"), "{pods}");
    let namespaces = explain("podtrace.spec.namespaceSelector");
    for says in [
        "podtrace.dev/allow-tracing: \"true\"",
        "Only PodTraces in the operator's own namespace",
        "--cluster-trace-namespaces",
        "reason NamespaceSelectorNotAllowed",
    ] {
        assert!(namespaces.contains(says), "{says:?} not in {namespaces}");
    }
    let duration = explain("podtrace.spec.duration");
    assert!(duration.contains("at status.expiresAt the agents detach"), "{duration}");
    assert!(duration.contains("Setting another value starts a new countdown"), "{duration}");
}

#[test]
fn printer_columns_show_interval_history_and_probes() {
    let cp = with_crds();
    let profile = "apiVersion: podtrace.dev/v1alpha1\nkind: MonitoringProfile\nmetadata: {name: columns}\nspec: {interval: 7s, history: {size: 42}, probes: {include: [dns]}}\n";
    let out = cp.kubectl(&["apply", "--server-side", "-f", "-"], Some(profile));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = cp.kubectl_ok(&["get", "monitoringprofile", "columns"]).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "INTERVAL", "HISTORY", "PROBES", "AGE"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["columns", "7s", "42", "[\"dns\"]"]);
    cp.kubectl_ok(&["delete", "monitoringprofile", "columns"]).unwrap();

    let crd = cp
        .kubectl_ok(&[
            "get",
            "crd",
            "podtraces.podtrace.dev",
            "-o",
            "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}",
        ])
        .unwrap();
    assert_eq!(crd, "Profile Matched Ready Nodes Expires Paused Age");
    let nt = cp
        .kubectl_ok(&[
            "get",
            "crd",
            "nodetraces.podtrace.dev",
            "-o",
            "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}",
        ])
        .unwrap();
    assert_eq!(nt, "Pods Attached Series Heartbeat Age");
}

#[test]
fn crds_have_status_subresources_and_the_right_scopes() {
    let cp = with_crds();
    for (crd, scope) in [
        ("monitoringprofiles.podtrace.dev", "Cluster"),
        ("podtraces.podtrace.dev", "Namespaced"),
        ("nodetraces.podtrace.dev", "Cluster"),
        ("podtraceprofiles.podtrace.dev", "Namespaced"),
    ] {
        let got = cp.kubectl_ok(&["get", "crd", crd, "-o", "jsonpath={.spec.scope}"]).unwrap();
        assert_eq!(got, scope, "{crd}");
    }
    for crd in ["podtraces.podtrace.dev", "nodetraces.podtrace.dev"] {
        let sub = cp
            .kubectl_ok(&["get", "crd", crd, "-o", "jsonpath={.spec.versions[0].subresources}"])
            .unwrap();
        assert!(sub.contains("status"), "{crd}: {sub}");
        // Conditions are a list-map keyed by type, so server-side apply merges them by type.
        let path = "jsonpath={.spec.versions[0].schema.openAPIV3Schema.properties.status.properties.conditions}";
        let conditions = cp.kubectl_ok(&["get", "crd", crd, "-o", path]).unwrap();
        assert!(
            conditions.contains(r#""x-kubernetes-list-map-keys":["type"]"#),
            "{crd}: {conditions}"
        );
        assert!(conditions.contains(r#""x-kubernetes-list-type":"map""#), "{crd}: {conditions}");
    }
}
