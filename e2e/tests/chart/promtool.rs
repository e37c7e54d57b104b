use podtrace_e2e::repo_root;
use std::process::Command;

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("promtool (Debian package prometheus)");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn alert_rules_pass_promtool_check() {
    let (ok, out) = promtool(&["check", "rules", "charts/podtrace/files/alerts.yaml"]);
    assert!(ok && out.contains("SUCCESS: 7 rules found"), "{out}");
}

#[test]
fn alert_unit_tests_fire_at_each_threshold_and_stay_silent_below() {
    let (ok, out) = promtool(&["test", "rules", "e2e/promtool/alerts-test.yaml"]);
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

#[test]
fn a_wrong_threshold_makes_the_alert_unit_tests_fail() {
    // The unit tests can fail: move the warning alert to level 2 and they must notice.
    let dir = std::env::temp_dir().join(format!("podtrace-promtool-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("charts/podtrace/files")).unwrap();
    std::fs::create_dir_all(dir.join("e2e/promtool")).unwrap();
    let rules =
        std::fs::read_to_string(repo_root().join("charts/podtrace/files/alerts.yaml")).unwrap();
    let broken = rules.replacen(
        "(podtrace_resource_alert_level) == 1",
        "(podtrace_resource_alert_level) == 2",
        1,
    );
    assert_ne!(rules, broken);
    std::fs::write(dir.join("charts/podtrace/files/alerts.yaml"), broken).unwrap();
    std::fs::copy(
        repo_root().join("e2e/promtool/alerts-test.yaml"),
        dir.join("e2e/promtool/alerts-test.yaml"),
    )
    .unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules", "e2e/promtool/alerts-test.yaml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "promtool accepted a warning alert at the critical level");
    std::fs::remove_dir_all(dir).unwrap();
}
