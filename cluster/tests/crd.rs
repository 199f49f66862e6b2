//! The NetworkLogging CustomResourceDefinition checked in under `deploy/helm/verdict/crds/` (the chart installs it) is the one the
//! Rust type generates (regenerate with `UPDATE_CRDS=1 cargo test -p verdict-cluster --test crd`).

use verdict_cluster::api::crd::definition_yaml;

fn checked_in() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/helm/verdict/crds/networklogging.yaml")
}

#[test]
fn the_checked_in_crd_is_the_generated_one() {
    let generated = definition_yaml();
    if std::env::var_os("UPDATE_CRDS").is_some() {
        std::fs::write(checked_in(), &generated).unwrap();
    }
    let file = std::fs::read_to_string(checked_in()).unwrap();
    assert!(
        file == generated,
        "deploy/helm/verdict/crds/networklogging.yaml is out of date: UPDATE_CRDS=1 cargo test -p verdict-cluster --test crd"
    );
}

#[test]
fn the_crd_matches_gke_s_object() {
    let crd: serde_yaml::Value = serde_yaml::from_str(&definition_yaml()).unwrap();
    assert_eq!(crd["spec"]["group"], "networking.gke.io");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["names"]["kind"], "NetworkLogging");
    assert_eq!(crd["spec"]["names"]["plural"], "networkloggings");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_mapping());
    let allow = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["cluster"]
        ["properties"]["allow"]["properties"];
    assert_eq!(allow["log"]["type"], "boolean");
    assert_eq!(allow["delegate"]["type"], "boolean");
}
