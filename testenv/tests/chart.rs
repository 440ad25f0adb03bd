//! The Helm chart (deploy/chart/dpdk-gitops): with default values it renders exactly the
//! objects deploy/ installs (compared object by object as JSON values), its values change
//! what they name, and on the real API server `helm install`, `helm upgrade` and
//! `helm uninstall` work (uninstall leaves the CRDs and nothing else).

use std::process::Output;

use dpdk_testenv::control_plane::workspace_root;
use dpdk_testenv::helm::{Helm, chart_dir};
use dpdk_testenv::objects::{Objects, add_objects, differences};
use dpdk_testenv::{ControlPlane, StartOptions};
use serde_json::Value;

const RELEASE: &str = "dpdk-gitops";
/// Where the release record lives: not dpdk-operator, which the chart itself creates.
const RELEASE_NS: &str = "default";

fn stdout_of(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm template` of the chart (CRDs included) with `--set` values.
fn render(helm: &Helm, sets: &[&str]) -> Objects {
    let chart = chart_dir().display().to_string();
    let mut args = vec!["template", RELEASE, chart.as_str(), "--include-crds"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = helm.command(None).args(&args).output().expect("helm runs");
    let yaml = stdout_of(&format!("helm {}", args.join(" ")), out);
    let mut objs = Objects::new();
    add_objects(&mut objs, &yaml, "helm template").expect("helm renders YAML objects");
    objs
}

/// What deploy/ installs: the files its kustomization lists (the seed's three files).
fn deploy_objects() -> Objects {
    let deploy = workspace_root().join("deploy");
    let kustomization: Value = serde_yaml::from_str(
        &std::fs::read_to_string(deploy.join("kustomization.yaml")).expect("kustomization"),
    )
    .expect("kustomization is YAML");
    let files: Vec<&str> = kustomization["resources"]
        .as_array()
        .expect("kustomization lists resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(files.contains(&"dpdk-controller.yaml"), "{files:?}");
    let mut objs = Objects::new();
    for f in files {
        let text = std::fs::read_to_string(deploy.join(f)).expect(f);
        add_objects(&mut objs, &text, f).expect("deploy/ is YAML");
    }
    objs
}

fn object<'a>(objs: &'a Objects, key: &str) -> &'a Value {
    objs.get(key)
        .unwrap_or_else(|| panic!("{key} not rendered; have {:#?}", objs.keys()))
}

#[test]
fn default_values_render_exactly_what_deploy_installs() {
    let helm = Helm::new().expect("helm builds");
    let (chart, deploy) = (render(&helm, &[]), deploy_objects());
    assert!(
        deploy.len() >= 15,
        "deploy/ lost objects: {:#?}",
        deploy.keys()
    );
    let diff = differences("the chart", &chart, "deploy/", &deploy);
    assert!(
        diff.is_empty(),
        "the chart and deploy/ drifted apart:\n{}",
        diff.join("\n")
    );

    // The comparison catches a change on either side alone: a value on the chart's side...
    let changed = render(&helm, &["controller.replicas=3"]);
    let diff = differences("the chart", &changed, "deploy/", &deploy);
    assert_eq!(diff.len(), 1, "{diff:#?}");
    assert!(
        diff[0].starts_with("apps/v1/Deployment/dpdk-operator/dpdk-controller: differs"),
        "{diff:#?}"
    );
    // ...and an edit of deploy/ (here: one more RBAC verb, in memory).
    let mut edited = deploy.clone();
    let role = edited
        .get_mut("rbac.authorization.k8s.io/v1/ClusterRole//dpdk-node-agent")
        .expect("the agent's ClusterRole");
    role["rules"][0]["verbs"]
        .as_array_mut()
        .expect("verbs")
        .push("list".into());
    let diff = differences("the chart", &chart, "deploy/", &edited);
    assert_eq!(diff.len(), 1, "{diff:#?}");
    assert!(
        diff[0].contains("ClusterRole//dpdk-node-agent: differs"),
        "{diff:#?}"
    );
}

#[test]
fn values_change_what_they_name() {
    let helm = Helm::new().expect("helm builds");
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let objs = render(
        &helm,
        &[
            "images.reconciler.repository=registry.example.com/dpdk-reconciler",
            &format!("images.reconciler.digest={digest}"),
            "images.nodeAgent.tag=9.9.9",
            "nodeAgent.nodeSelector.kubernetes\\.io/arch=arm64",
            "devicePlugin.tolerations=null",
            "controller.resources.limits.memory=512Mi",
            "controller.memory.fleetNodes=1000",
            "sourceNamespace=dpdk-sources",
            "webhookReceiver.service.enabled=true",
            "webhookReceiver.service.port=9443",
            "webhookReceiver.ingress.enabled=true",
            "webhookReceiver.ingress.host=hooks.example.com",
            "configSource.enabled=true",
            "configSource.url=https://git.example.com/p/c.git",
        ],
    );
    let deployment = object(&objs, "apps/v1/Deployment/dpdk-operator/dpdk-controller");
    let controller = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        controller["image"],
        format!("registry.example.com/dpdk-reconciler:0.1.0@{digest}").as_str()
    );
    assert_eq!(controller["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(
        controller["resources"]["requests"]["memory"], "65Mi",
        "without an explicit request: 35 MiB + 30 KiB × 1000 nodes, rounded up"
    );
    let loader = object(&objs, "apps/v1/DaemonSet/dpdk-operator/dpdk-driver-loader");
    let pod = &loader["spec"]["template"]["spec"];
    assert_eq!(
        pod["nodeSelector"],
        serde_json::json!({"dpdk.aws.k8s/enabled": "true", "kubernetes.io/arch": "arm64"}),
        "extra node selectors add to the controller's label, never replace it"
    );
    assert_eq!(
        pod["initContainers"][0]["image"],
        "ghcr.io/dpdk-gitops/dpdk-node-agent:9.9.9"
    );
    let plugin = object(&objs, "apps/v1/DaemonSet/dpdk-operator/sriov-device-plugin");
    assert!(
        plugin["spec"]["template"]["spec"]
            .get("tolerations")
            .is_none()
    );
    // Sources elsewhere: Secrets readable there, no longer in the controller's namespace.
    let role = object(
        &objs,
        "rbac.authorization.k8s.io/v1/Role/dpdk-operator/dpdk-controller",
    );
    assert!(!role.to_string().contains("secrets"), "{role}");
    let sources = object(
        &objs,
        "rbac.authorization.k8s.io/v1/Role/dpdk-sources/dpdk-controller-sources",
    );
    assert_eq!(sources["rules"][0]["resources"][0], "secrets");
    object(
        &objs,
        "rbac.authorization.k8s.io/v1/RoleBinding/dpdk-sources/dpdk-controller-sources",
    );
    let svc = object(&objs, "v1/Service/dpdk-operator/dpdk-webhook-receiver");
    assert_eq!(svc["spec"]["ports"][0]["port"], 9443);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "webhook");
    let ingress = object(
        &objs,
        "networking.k8s.io/v1/Ingress/dpdk-operator/dpdk-webhook-receiver",
    );
    assert_eq!(ingress["spec"]["rules"][0]["host"], "hooks.example.com");
    let source = object(
        &objs,
        "networking.k8s.aws/v1alpha1/DPDKConfigSource/dpdk-sources/platform-dpdk",
    );
    assert_eq!(source["spec"]["url"], "https://git.example.com/p/c.git");
    assert_eq!(source["spec"]["secretRef"]["name"], "platform-dpdk-git");

    // The per-node admission policy is on by default (deploy/ installs it); off, none of
    // its policies or bindings is rendered, and the rest stays.
    let without = render(&helm, &["nodePolicy.enabled=false"]);
    let admission = |o: &Objects| {
        o.keys()
            .filter(|k| k.starts_with("admissionregistration.k8s.io/"))
            .count()
    };
    assert_eq!(admission(&render(&helm, &[])), 6);
    assert_eq!(admission(&without), 0);
    object(&without, "apps/v1/Deployment/dpdk-operator/dpdk-controller");
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    let out = cp.kubectl().args(args).output().expect("kubectl runs");
    stdout_of(&format!("kubectl {}", args.join(" ")), out)
}

fn helm_on(helm: &Helm, cp: &ControlPlane, args: &[&str]) -> String {
    let out = helm
        .command(Some(cp.kubeconfig_path()))
        .args(args)
        .output()
        .expect("helm runs");
    stdout_of(&format!("helm {}", args.join(" ")), out)
}

/// Names of the objects of `kinds` labelled app.kubernetes.io/part-of=dpdk-gitops.
fn ours(cp: &ControlPlane, kinds: &str) -> String {
    kubectl(
        cp,
        &[
            "get",
            kinds,
            "-A",
            "-l",
            "app.kubernetes.io/part-of=dpdk-gitops",
            "-o",
            "name",
        ],
    )
}

#[tokio::test]
async fn helm_install_upgrade_and_uninstall_on_the_real_api_server() {
    let cp = ControlPlane::start(StartOptions::default())
        .await
        .expect("control plane");
    let helm = Helm::new().expect("helm builds");
    let chart = chart_dir().display().to_string();
    let root = workspace_root();
    let path = |rel: &str| root.join(rel).display().to_string();
    // The prerequisite: the AWS Multi-ENI Controller's NodeENI CRD (our test copy).
    kubectl(
        &cp,
        &["apply", "-f", &path("deploy/testing/nodeeni-crd.yaml")],
    );

    // Install: the CRDs from crds/, then everything else.
    helm_on(&helm, &cp, &["install", RELEASE, &chart, "-n", RELEASE_NS]);
    kubectl(
        &cp,
        &[
            "wait",
            "--for=condition=Established",
            "crd/dpdkconfigs.networking.k8s.aws",
            "crd/dpdknodestates.networking.k8s.aws",
            "crd/dpdkconfigsources.networking.k8s.aws",
            "--timeout=30s",
        ],
    );
    let replicas = kubectl(
        &cp,
        &[
            "get",
            "deployment",
            "dpdk-controller",
            "-n",
            "dpdk-operator",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
        ],
    );
    assert_eq!(replicas, "2 ghcr.io/dpdk-gitops/dpdk-reconciler:0.1.0");
    // The seed's DPDKConfig applies and kubectl lists it.
    kubectl(
        &cp,
        &[
            "apply",
            "-f",
            &path("examples-repo/clusters/production/default-dpdk-config.yaml"),
        ],
    );
    let configs = kubectl(&cp, &["get", "dpdkconfigs", "-o", "name"]);
    assert_eq!(
        configs.trim(),
        "dpdkconfig.networking.k8s.aws/default-dpdk-config"
    );

    // Upgrade with changed values: fewer replicas, a pinned image, a Git source and the
    // webhook receiver's Service and Ingress.
    let digest = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    helm_on(
        &helm,
        &cp,
        &[
            "upgrade",
            RELEASE,
            &chart,
            "-n",
            RELEASE_NS,
            "--set",
            "controller.replicas=1",
            "--set",
            &format!("images.reconciler.digest={digest}"),
            "--set",
            "configSource.enabled=true",
            "--set",
            "webhookReceiver.service.enabled=true",
            "--set",
            "webhookReceiver.service.port=9443",
            "--set",
            "webhookReceiver.ingress.enabled=true",
        ],
    );
    let upgraded = kubectl(
        &cp,
        &[
            "get",
            "deployment",
            "dpdk-controller",
            "-n",
            "dpdk-operator",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
        ],
    );
    assert_eq!(
        upgraded,
        format!("1 ghcr.io/dpdk-gitops/dpdk-reconciler:0.1.0@{digest}")
    );
    let source = kubectl(
        &cp,
        &[
            "get",
            "dpdkconfigsource",
            "platform-dpdk",
            "-n",
            "dpdk-operator",
            "-o",
            "jsonpath={.spec.secretRef.name}",
        ],
    );
    assert_eq!(source, "platform-dpdk-git");
    let svc = kubectl(
        &cp,
        &[
            "get",
            "service",
            "dpdk-webhook-receiver",
            "-n",
            "dpdk-operator",
            "-o",
            "jsonpath={.spec.ports[0].port} {.spec.ports[0].targetPort}",
        ],
    );
    assert_eq!(svc, "9443 webhook");
    kubectl(
        &cp,
        &[
            "get",
            "ingress",
            "dpdk-webhook-receiver",
            "-n",
            "dpdk-operator",
        ],
    );
    let history = helm_on(
        &helm,
        &cp,
        &["history", RELEASE, "-n", RELEASE_NS, "-o", "json"],
    );
    let history: Value = serde_json::from_str(&history).expect("helm history is JSON");
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");

    // Uninstall: no RBAC, workloads, Services, Ingress, sources or admission objects are
    // left; the namespace is being deleted (no namespace controller runs here to finish it);
    // the CRDs and the DPDKConfig the user applied stay, as Helm leaves CRDs.
    helm_on(&helm, &cp, &["uninstall", RELEASE, "-n", RELEASE_NS]);
    let left = ours(
        &cp,
        "clusterroles,clusterrolebindings,roles,rolebindings,serviceaccounts,deployments,daemonsets,services,ingresses,dpdkconfigsources,validatingwebhookconfigurations,mutatingwebhookconfigurations,validatingadmissionpolicies,validatingadmissionpolicybindings",
    );
    assert_eq!(left.trim(), "", "helm uninstall left objects behind");
    let ns = cp
        .kubectl()
        .args([
            "get",
            "namespace",
            "dpdk-operator",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ])
        .output()
        .expect("kubectl runs");
    assert!(
        !ns.status.success() || !String::from_utf8_lossy(&ns.stdout).trim().is_empty(),
        "the namespace dpdk-operator must be deleted with the release"
    );
    let crds = kubectl(&cp, &["get", "crds", "-o", "name"]);
    for crd in ["dpdkconfigs", "dpdknodestates", "dpdkconfigsources"] {
        assert!(
            crds.contains(&format!("{crd}.networking.k8s.aws")),
            "{crds}"
        );
    }
    let configs = kubectl(&cp, &["get", "dpdkconfigs", "-o", "name"]);
    assert_eq!(
        configs.trim(),
        "dpdkconfig.networking.k8s.aws/default-dpdk-config"
    );
    drop(cp);
}
