"""Checks deploy/kubernetes/ offline and prints what the image test needs.

Usage: k8s_manifests.py DEPLOY_DIR
  * every Kubernetes object validates, in strict mode (unknown fields are
    errors), against Kubernetes' own OpenAPI schemas of the oldest and newest
    versions we support (kubernetes-validate ships them);
  * the ServiceMonitor validates against the Prometheus Operator's CRD
    (the models cloudcoil generates from it): strict by a round trip, since
    those models ignore unknown fields instead of refusing them;
  * the kustomization lists every manifest and the DaemonSet's image;
  * the pod annotations are what deploy/prometheus/scrape.yml keeps.
Prints "ok <JSON>": the DaemonSet's container args, added capabilities,
probe paths, and the versions checked.
"""
import json
import pathlib
import sys

import kubernetes_validate
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring

# appArmorProfile is a field from 1.30 on; 1.37 is the newest schema shipped.
VERSIONS = ["1.30.0", "1.37.0"]


def main():
    deploy = pathlib.Path(sys.argv[1])
    k8s = deploy / "kubernetes"
    objects = {}
    for path in sorted(k8s.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            kind = doc["kind"]
            objects[kind] = (path.name, doc)
            if kind == "ServiceMonitor":
                model = monitoring.ServiceMonitor.model_validate(doc)
                back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
                if back != doc:
                    sys.exit(f"{path.name}: fields the ServiceMonitor CRD does not have: {doc} != {back}")
                continue
            for version in VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    sys.exit(f"{path.name} ({kind}) against Kubernetes {version}: {e.message} at {list(e.path)}")

    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    listed = sorted(kustomization["resources"])
    present = sorted(name for name, _ in objects.values())
    if listed != present:
        sys.exit(f"kustomization.yaml lists {listed}, the folder has {present}")

    _, ds = objects["DaemonSet"]
    pod = ds["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    image = container["image"].rsplit(":", 1)
    if [kustomization["images"][0]["name"], kustomization["images"][0]["newTag"]] != image:
        sys.exit(f"kustomization.yaml's image differs from the DaemonSet's {container['image']}")
    annotations = pod["metadata"]["annotations"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != str(port):
        sys.exit(f"prometheus.io annotations {annotations} do not announce port {port}")
    scrape = yaml.safe_load((deploy / "prometheus" / "scrape.yml").read_text())
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    keep = jobs["pywats-agent-pods"]["relabel_configs"][0]
    if keep["source_labels"] != ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] or keep["regex"] != "true":
        sys.exit("scrape.yml's pod job does not keep the annotated pods")
    _, service = objects["Service"]
    _, monitor = objects["ServiceMonitor"]
    if not monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items():
        sys.exit("the ServiceMonitor does not select the Service")
    if not service["spec"]["selector"].items() <= pod["metadata"]["labels"].items():
        sys.exit("the Service does not select the DaemonSet's pods")

    security = container["securityContext"]
    print("ok " + json.dumps({
        "versions": VERSIONS,
        "kinds": sorted(objects),
        "args": container["args"],
        "host_pid": pod["spec"].get("hostPID", False),
        "privileged": security.get("privileged", False),
        "drop": security["capabilities"]["drop"],
        "seccomp": security["seccompProfile"]["type"],
        "add": security["capabilities"]["add"],
        "liveness": container["livenessProbe"]["httpGet"]["path"],
        "readiness": container["readinessProbe"]["httpGet"]["path"],
        "mounts": [(m["mountPath"], m.get("readOnly", False)) for m in container["volumeMounts"]],
        "memory_limit": container["resources"]["limits"]["memory"],
    }))


if __name__ == "__main__":
    main()
