use kube::{
    Api,
    api::{Patch, PatchParams},
};
use podtrace_api::{MonitoringProfile, PodTrace};
use podtrace_e2e::{json_subset, repo_root, with_crds, yaml_documents};

#[tokio::test]
async fn every_sample_is_accepted_and_reads_back_unchanged() {
    let cp = with_crds();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "samples").await.unwrap();
    let samples = yaml_documents(&repo_root().join("manifests/samples"), "").unwrap();
    let kinds: Vec<&str> = samples.iter().map(|(_, doc)| doc["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "MonitoringProfile").count(), 6, "six presets");
    assert!(
        kinds.iter().filter(|k| **k == "PodTrace").count() >= 3,
        "profileRef, inline, automatic"
    );

    let apply = PatchParams::apply("podtrace-e2e-samples").validation_strict();
    for (file, doc) in samples {
        let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
        let (read_back, typed_equal) = match doc["kind"].as_str().unwrap() {
            "MonitoringProfile" => {
                let api = Api::<MonitoringProfile>::all(client.clone());
                let got = api.patch(&name, &apply, &Patch::Apply(&doc)).await;
                let got = got.unwrap_or_else(|e| panic!("{file}: rejected: {e}"));
                let sample: MonitoringProfile = serde_json::from_value(doc.clone()).unwrap();
                (serde_json::to_value(&got).unwrap(), sample.spec == got.spec)
            }
            "PodTrace" => {
                let api = Api::<PodTrace>::namespaced(client.clone(), &ns.name);
                let got = api.patch(&name, &apply, &Patch::Apply(&doc)).await;
                let got = got.unwrap_or_else(|e| panic!("{file}: rejected: {e}"));
                let sample: PodTrace = serde_json::from_value(doc.clone()).unwrap();
                (serde_json::to_value(&got).unwrap(), sample.spec == got.spec)
            }
            other => panic!("{file}: unexpected kind {other}"),
        };
        // Every field the sample sets reads back with the same value…
        json_subset(&doc["spec"], &read_back["spec"], "spec")
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        // …and the fields it leaves out were defaulted by the API server exactly as the Rust
        // types default them (the schema's defaults and serde's agree).
        assert!(typed_equal, "{file}: the API server's defaults differ from the types' defaults");
    }
    ns.delete().await.unwrap();
}
