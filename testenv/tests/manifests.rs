//! deploy/ on the real API server: the seed's three `kubectl apply -f` files install on an
//! empty cluster and the node-scope policy after them, every object passes a server-side
//! dry-run, the kustomization and the samples are accepted, and the RBAC is least privilege
//! (checked with the API server's own authorizer through `kubectl auth can-i --as`).

use std::path::PathBuf;
use std::process::Output;

use dpdk_testenv::control_plane::workspace_root;
use dpdk_testenv::{ControlPlane, StartOptions};

fn path(rel: &str) -> String {
    workspace_root().join(rel).display().to_string()
}

fn run(cp: &ControlPlane, args: &[&str]) -> Output {
    cp.kubectl().args(args).output().expect("kubectl runs")
}

fn ok(cp: &ControlPlane, args: &[&str]) -> String {
    let out = run(cp, args);
    assert!(
        out.status.success(),
        "kubectl {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl auth can-i` as a ServiceAccount; true when allowed.
fn can(cp: &ControlPlane, sa: &str, args: &[&str]) -> bool {
    let user = format!("--as=system:serviceaccount:dpdk-operator:{sa}");
    let mut full = vec![
        "auth",
        "can-i",
        user.as_str(),
        "--as-group=system:serviceaccounts",
        "--as-group=system:serviceaccounts:dpdk-operator",
        "--as-group=system:authenticated",
    ];
    full.extend_from_slice(args);
    let out = run(cp, &full);
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match said.as_str() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {args:?} as {sa}: unexpected answer {other:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[tokio::test]
async fn deploy_installs_on_an_empty_cluster_and_rbac_is_least_privilege() {
    let cp = ControlPlane::start(StartOptions::default())
        .await
        .expect("control plane");
    let (crd, operator, controller) = (
        path("deploy/dpdk-crd.yaml"),
        path("deploy/dpdk-operator.yaml"),
        path("deploy/dpdk-controller.yaml"),
    );

    // The prerequisite: the AWS Multi-ENI Controller's NodeENI CRD (our test copy).
    ok(
        &cp,
        &["apply", "-f", &path("deploy/testing/nodeeni-crd.yaml")],
    );
    // The seed's install command, as the guide gives it (one file at a time).
    for f in [&crd, &operator, &controller] {
        ok(&cp, &["apply", "-f", f]);
    }
    ok(
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
    // The node-scope policy: its own file, applied after the seed's three.
    let policy = path("deploy/dpdk-node-policy.yaml");
    ok(&cp, &["apply", "-f", &policy]);
    let installed = ok(
        &cp,
        &[
            "get",
            "validatingadmissionpolicies,validatingadmissionpolicybindings",
            "-l",
            "app.kubernetes.io/part-of=dpdk-gitops",
            "-o",
            "name",
        ],
    );
    for kind in [
        "validatingadmissionpolicy",
        "validatingadmissionpolicybinding",
    ] {
        for name in ["nodes", "dpdknodestates", "nodeenis"] {
            let object = format!("{kind}.admissionregistration.k8s.io/dpdk-node-scope-{name}");
            assert!(
                installed.lines().any(|l| l == object),
                "{object} missing:\n{installed}"
            );
        }
    }
    // Everything again as a server-side dry-run: all objects, the kustomization, the samples.
    ok(
        &cp,
        &[
            "apply",
            "--dry-run=server",
            "-f",
            &crd,
            "-f",
            &operator,
            "-f",
            &controller,
            "-f",
            &policy,
        ],
    );
    ok(&cp, &["apply", "--dry-run=server", "-k", &path("deploy")]);
    ok(
        &cp,
        &[
            "apply",
            "--dry-run=server",
            "-f",
            &path("deploy/samples/dpdkconfigsource.yaml"),
        ],
    );
    ok(
        &cp,
        &[
            "apply",
            "--dry-run=server",
            "-f",
            &path("deploy/samples/webhook-ingress.yaml"),
        ],
    );
    // The webhook receiver's own Service, apart from dpdk-controller's (/metrics, /drift*).
    let receiver = ok(
        &cp,
        &[
            "get",
            "service",
            "-n",
            "dpdk-operator",
            "dpdk-webhook-receiver",
            "-o",
            "jsonpath={.spec.ports[0].name} {.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.selector.app}",
        ],
    );
    assert_eq!(receiver, "webhook 80 webhook dpdk-controller");

    // The seed's names, labels and containers.
    let ds = ok(
        &cp,
        &[
            "get",
            "daemonset",
            "-n",
            "dpdk-operator",
            "-l",
            "app=dpdk-driver-loader",
            "-o",
            "jsonpath={.items[0].metadata.name} {.items[0].spec.template.spec.initContainers[0].name} {.items[0].spec.template.spec.containers[0].name} {.items[0].spec.template.spec.nodeSelector}",
        ],
    );
    assert_eq!(
        ds,
        r#"dpdk-driver-loader driver-loader monitor {"dpdk.aws.k8s/enabled":"true"}"#
    );
    let dp = ok(
        &cp,
        &[
            "get",
            "daemonset",
            "-n",
            "dpdk-operator",
            "-l",
            "app=sriov-device-plugin",
            "-o",
            "jsonpath={.items[0].metadata.name} {.items[0].spec.template.spec.nodeSelector}",
        ],
    );
    assert_eq!(dp, r#"sriov-device-plugin {"dpdk.aws.k8s/ready":"true"}"#);
    let dep = ok(
        &cp,
        &[
            "get",
            "deployment",
            "-n",
            "dpdk-operator",
            "-l",
            "app=dpdk-controller",
            "-o",
            "jsonpath={.items[0].metadata.name} {.items[0].spec.replicas}",
        ],
    );
    assert_eq!(dep, "dpdk-controller 2");
    // The agent finds the host's modules and kernel config under --host-root=/host, read-only.
    let mounts = ok(
        &cp,
        &[
            "get",
            "daemonset",
            "dpdk-driver-loader",
            "-n",
            "dpdk-operator",
            "-o",
            "jsonpath={range .spec.template.spec.initContainers[*]}{.name}:{.args}:{range .volumeMounts[*]}{.mountPath}={.readOnly},{end};{end}{range .spec.template.spec.containers[*]}{.name}:{.args}:{range .volumeMounts[*]}{.mountPath}={.readOnly},{end};{end}",
        ],
    );
    for container in mounts.split(';').filter(|c| !c.is_empty()) {
        assert!(container.contains("--host-root=/host"), "{container}");
        assert!(
            container.contains("/host/lib/modules=true,") && container.contains("/host/boot=true,"),
            "modules and kernel config must be mounted read-only under the host root: {container}"
        );
    }
    // The device plugin is not privileged; only the node agent's containers are.
    let privileged = ok(
        &cp,
        &[
            "get",
            "daemonset",
            "sriov-device-plugin",
            "-n",
            "dpdk-operator",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].securityContext.privileged}",
        ],
    );
    assert_eq!(privileged, "false");
    let nonroot = ok(
        &cp,
        &[
            "get",
            "deployment",
            "dpdk-controller",
            "-n",
            "dpdk-operator",
            "-o",
            "jsonpath={.spec.template.spec.securityContext.runAsNonRoot}",
        ],
    );
    assert_eq!(nonroot, "true");

    // What each component needs...
    assert!(can(
        &cp,
        "dpdk-controller",
        &["patch", "nodeenis.networking.k8s.aws"]
    ));
    assert!(can(&cp, "dpdk-controller", &["patch", "nodes"]));
    assert!(can(
        &cp,
        "dpdk-controller",
        &["create", "dpdknodestates.networking.k8s.aws"]
    ));
    assert!(can(
        &cp,
        "dpdk-controller",
        &[
            "patch",
            "dpdkconfigs.networking.k8s.aws",
            "--subresource=status"
        ]
    ));
    assert!(can(
        &cp,
        "dpdk-controller",
        &[
            "update",
            "leases.coordination.k8s.io",
            "-n",
            "dpdk-operator"
        ]
    ));
    assert!(can(
        &cp,
        "dpdk-controller",
        &["get", "secrets", "-n", "dpdk-operator"]
    ));
    // The webhook receiver watches the Secrets its sources name.
    assert!(can(
        &cp,
        "dpdk-controller",
        &["watch", "secrets", "-n", "dpdk-operator"]
    ));
    assert!(can(
        &cp,
        "dpdk-node-agent",
        &[
            "patch",
            "dpdknodestates.networking.k8s.aws",
            "--subresource=status"
        ]
    ));
    assert!(can(
        &cp,
        "dpdk-node-agent",
        &[
            "patch",
            "nodeenis.networking.k8s.aws",
            "--subresource=status"
        ]
    ));
    assert!(can(&cp, "dpdk-node-agent", &["patch", "nodes"]));
    assert!(can(
        &cp,
        "dpdk-device-plugin",
        &["watch", "dpdknodestates.networking.k8s.aws"]
    ));
    // ...and what it must not do.
    for sa in ["dpdk-controller", "dpdk-node-agent", "dpdk-device-plugin"] {
        assert!(
            !can(&cp, sa, &["create", "pods/exec", "-A"]),
            "{sa} must not exec into pods"
        );
        assert!(
            !can(&cp, sa, &["list", "secrets", "-A"]),
            "{sa} must not list secrets cluster-wide"
        );
        assert!(
            !can(&cp, sa, &["delete", "nodes"]),
            "{sa} must not delete nodes"
        );
        assert!(
            !can(&cp, sa, &["create", "clusterrolebindings"]),
            "{sa} must not grant itself rights"
        );
    }
    // The controller writes NodeENI spec fields only; attachments belong to the Multi-ENI Controller.
    assert!(!can(
        &cp,
        "dpdk-controller",
        &[
            "patch",
            "nodeenis.networking.k8s.aws",
            "--subresource=status"
        ]
    ));
    assert!(!can(
        &cp,
        "dpdk-controller",
        &["delete", "nodeenis.networking.k8s.aws"]
    ));
    // The agent reports status; it never edits desired state.
    assert!(!can(
        &cp,
        "dpdk-node-agent",
        &["patch", "dpdknodestates.networking.k8s.aws"]
    ));
    assert!(!can(
        &cp,
        "dpdk-node-agent",
        &["patch", "dpdkconfigs.networking.k8s.aws"]
    ));
    assert!(!can(
        &cp,
        "dpdk-node-agent",
        &["patch", "nodeenis.networking.k8s.aws"]
    ));
    assert!(
        !can(
            &cp,
            "dpdk-node-agent",
            &["list", "dpdknodestates.networking.k8s.aws"]
        ),
        "the agent follows its own node state by name, it does not list"
    );
    assert!(!can(&cp, "dpdk-device-plugin", &["patch", "nodes"]));
    assert!(!can(
        &cp,
        "dpdk-device-plugin",
        &["get", "secrets", "-n", "dpdk-operator"]
    ));
    drop(cp);
}

#[tokio::test]
async fn examples_repo_objects_pass_server_side_dry_run() {
    let cp = dpdk_testenv::shared();
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in [
        "examples-repo/clusters/production",
        "examples-repo/clusters/staging",
        "examples-repo/workloads",
    ] {
        for e in std::fs::read_dir(workspace_root().join(dir))
            .expect(dir)
            .flatten()
        {
            files.push(e.path());
        }
    }
    files.sort();
    assert!(
        files.len() >= 3,
        "examples-repo lost its configs: {files:?}"
    );
    for f in files {
        ok(
            cp,
            &["apply", "--dry-run=server", "-f", &f.display().to_string()],
        );
    }
}
