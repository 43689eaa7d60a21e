#!/usr/bin/env python3
"""Checks the deploy files beyond what their own tools check; run by tests/deploy.rs.

    validate.py dcos [--out DIR]        the DC/OS Universe package
    validate.py kubernetes [--out DIR]  the Kubernetes manifests
    validate.py docker                  the Dockerfile, .dockerignore and build.sh

dcos: package.json and resource.json against schema/, config.json as a draft-04 JSON Schema
whose defaults are complete and valid, marathon.json.mustache rendered (chevron) with the
defaults and with the other branches' options, each result against the Marathon app schema
plus what Corral on every agent needs (hostname UNIQUE, host network, the ports, the health
check). --out writes, per rendering, the CORRAL_* environment the task would get (the cmd is
run by sh with a stand-in binary) as dcos-env-<name>.json.

kubernetes: every document against the bundled Kubernetes OpenAPI schemas (kubernetes-validate,
strict), then the DaemonSet's settings. --out writes the ConfigMap's corral.toml as
k8s-corral.toml and the container's literal environment as k8s-env.json.

Needs jsonschema, chevron, kubernetes-validate, dockerfile-parse and PyYAML
(.ci/setup.d/40-deploy-tools.sh installs them). Exits 1 with every failure listed.
"""

import argparse
import copy
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib

DEPLOY = pathlib.Path(__file__).resolve().parent
ROOT = DEPLOY.parent

# The Kubernetes versions the manifests are checked against: the oldest supported and the
# newest schema kubernetes-validate 1.37.0 bundles.
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]

# Standing in for the values Mesos, Marathon and Kubernetes give the task at run time.
TASK_HOST = "10.0.0.7"
NODE_NAME = "node-1"


class Checks:
    def __init__(self, family):
        self.family = family
        self.failures = []
        self.passed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)
        return ok

    def fail(self, what):
        self.failures.append(what)

    def finish(self):
        for f in self.failures:
            print(f"FAIL {self.family}: {f}", file=sys.stderr)
        print(f"{self.family}: {self.passed} checks passed, {len(self.failures)} failed")
        return 1 if self.failures else 0


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def schema_errors(validator_cls, schema, instance):
    v = validator_cls(schema)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in sorted(v.iter_errors(instance), key=lambda e: list(e.absolute_path))
    ]


# ---------------------------------------------------------------------------------------------
# DC/OS


def option_defaults(schema, path, c):
    """The defaults of an options schema, as the options object; every leaf must have one."""
    if schema.get("type") == "object":
        return {
            name: option_defaults(sub, f"{path}.{name}" if path else name, c)
            for name, sub in schema.get("properties", {}).items()
        }
    c.check("default" in schema, f"config.json: option {path} has no default")
    return schema.get("default")


def option_paths(options, prefix=""):
    for k, v in options.items():
        path = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            yield from option_paths(v, path)
        else:
            yield path


def merge(base, override):
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


# The renderings checked: the defaults, then options that take the template's other branches.
DCOS_VARIANTS = {
    "defaults": {},
    "binary-persistent": {
        "service": {
            "instances": 5,
            "binary_uri": "https://artifacts.example.com/corral-0.1.0-x86_64-linux-gnu.tar.gz",
            "data_dir": "/var/lib/corral",
            "log_level": "info,corral_statsd=debug",
        },
        "agent": {
            "url": "https://10.0.0.7:5051",
            "iam_config": "/run/dcos/etc/dcos-metrics/service_account.json",
            "ca_certificate": "/run/dcos/pki/CA/ca-bundle.crt",
        },
        "kafka": {
            "brokers": "broker.kafka.l4lb.thisdcos.directory:9092,broker-1.kafka.mesos:9092",
            "compression": "zstd",
            "avro_codec": "snappy",
        },
        "statsd": {"percentiles": "50, 99.9", "container_port_range": "40000-41000"},
    },
    "docker-image": {
        "service": {"use_docker_image": True},
        "agent": {"url": "http://127.0.0.1:5051"},
    },
    "docker-image-persistent": {
        "service": {
            "use_docker_image": True,
            "docker_image": "registry.example.com/ops/corral:0.1.0",
            "data_dir": "/var/lib/corral",
        },
        "api": {"port": 61091},
        "statsd": {"port": 18125},
    },
}


def task_environment(app, c, name):
    """The CORRAL_* variables the task's process would see: the app's env, then its cmd run
    by sh with a stand-in corral that records its environment and arguments."""
    env = {k: v for k, v in app.get("env", {}).items() if isinstance(v, str)}
    if "cmd" not in app:
        c.check(app.get("args") == ["run"], f"{name}: args {app.get('args')!r} != ['run']")
        return {k: v for k, v in env.items() if k.startswith("CORRAL_")}
    with tempfile.TemporaryDirectory() as sandbox:
        record = os.path.join(sandbox, "record.json")
        stub = os.path.join(sandbox, "corral")
        with open(stub, "w", encoding="utf-8") as f:
            f.write(
                "#!/bin/sh\n"
                f"exec {shlex.quote(sys.executable)} -c '"
                "import json, os, sys; "
                "json.dump({\"args\": sys.argv[2:], \"env\": {k: v for k, v in os.environ.items() "
                "if k.startswith(\"CORRAL_\")}}, open(sys.argv[1], \"w\"))' "
                f"{shlex.quote(record)} \"$@\"\n"
            )
        os.chmod(stub, 0o755)
        run_env = {
            "PATH": "/usr/bin:/bin",
            "MESOS_SANDBOX": sandbox,
            "HOST": TASK_HOST,
            **env,
        }
        r = subprocess.run(
            ["/bin/sh", "-c", app["cmd"]],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if not c.check(r.returncode == 0 and os.path.exists(record),
                       f"{name}: cmd failed ({r.returncode}): {r.stderr.strip()}"):
            return {}
        got = load_json(record)
    c.check(got["args"] == ["run"], f"{name}: cmd runs corral with {got['args']!r}, not ['run']")
    seen = got["env"]
    data_dir = seen.get("CORRAL_DATA_DIR", "")
    c.check(data_dir == os.path.join(sandbox, "corral-data"),
            f"{name}: CORRAL_DATA_DIR {data_dir!r} is not the sandbox's corral-data")
    # A path the checks below can use: the sandbox is gone.
    seen["CORRAL_DATA_DIR"] = "/var/lib/mesos/slave/sandbox/corral-data"
    return seen


def check_marathon_app(app, options, name, c):
    svc, api, statsd = options["service"], options["api"], options["statsd"]
    c.check(app.get("id") == svc["name"], f"{name}: id {app.get('id')!r}")
    c.check(app.get("instances") == svc["instances"], f"{name}: instances {app.get('instances')!r}")
    c.check(["hostname", "UNIQUE"] in app.get("constraints", []),
            f"{name}: no [\"hostname\", \"UNIQUE\"] constraint")
    c.check(app.get("networks") == [{"mode": "host"}], f"{name}: networks is not host mode")
    c.check(app.get("requirePorts") is True, f"{name}: requirePorts is not true (fixed host ports)")
    ports = [(p.get("port"), p.get("protocol")) for p in app.get("portDefinitions", [])]
    c.check(ports == [(api["port"], "tcp"), (statsd["port"], "udp")],
            f"{name}: portDefinitions {ports!r}")
    checks = app.get("healthChecks", [])
    c.check(len(checks) == 1, f"{name}: {len(checks)} health checks")
    for hc in checks:
        c.check(hc.get("path") == "/v0/ping", f"{name}: health check path {hc.get('path')!r}")
        c.check(hc.get("protocol") in ("MESOS_HTTP", "HTTP"), f"{name}: health check protocol")
        idx = hc.get("portIndex")
        c.check(isinstance(idx, int) and idx < len(ports) and ports[idx] == (api["port"], "tcp"),
                f"{name}: health check portIndex {idx!r} is not the API port")
    us = app.get("upgradeStrategy", {})
    c.check(us.get("minimumHealthCapacity") == 0 and us.get("maximumOverCapacity") == 0,
            f"{name}: upgradeStrategy must replace in place (one task per agent on fixed ports)")
    env = app.get("env", {})
    for k, v in env.items():
        c.check(k.startswith("CORRAL_") and isinstance(v, str), f"{name}: env {k}={v!r}")
    c.check(env.get("CORRAL_API_LISTEN") == f"{api['listen_host']}:{api['port']}",
            f"{name}: CORRAL_API_LISTEN {env.get('CORRAL_API_LISTEN')!r}")
    c.check(env.get("CORRAL_STATSD_LISTEN") == f"{statsd['listen_host']}:{statsd['port']}",
            f"{name}: CORRAL_STATSD_LISTEN {env.get('CORRAL_STATSD_LISTEN')!r}")
    container = app.get("container", {})
    c.check(container.get("type") == "MESOS", f"{name}: container type {container.get('type')!r}")
    volumes = container.get("volumes", [])
    data_volumes = [v for v in volumes if v.get("containerPath") == "corral-data"]
    if svc["data_dir"]:
        c.check(data_volumes == [{"containerPath": "corral-data", "hostPath": svc["data_dir"],
                                  "mode": "RW"}], f"{name}: data_dir volume {data_volumes!r}")
    else:
        c.check(not data_volumes, f"{name}: a data volume without service.data_dir")
    if svc["use_docker_image"]:
        image = container.get("docker", {}).get("image", "")
        want = svc["docker_image"] or "registry.example.com/corral:0.1.0"
        c.check(image == want, f"{name}: image {image!r} != {want!r}")
        c.check("fetch" not in app and "cmd" not in app, f"{name}: image mode fetches or has cmd")
        c.check(env.get("CORRAL_DATA_DIR") == "/mnt/mesos/sandbox/corral-data",
                f"{name}: CORRAL_DATA_DIR {env.get('CORRAL_DATA_DIR')!r}")
    else:
        c.check("docker" not in container, f"{name}: binary mode has an image")
        fetch = app.get("fetch", [])
        want = svc["binary_uri"] or "https://downloads.example.com/corral/0.1.0/corral-0.1.0-x86_64-linux-gnu.tar.gz"
        c.check([f.get("uri") for f in fetch] == [want], f"{name}: fetch {fetch!r}")
        c.check(all(f.get("extract") for f in fetch), f"{name}: the tarball is not extracted")


def validate_dcos(out):
    import chevron
    import jsonschema

    c = Checks("dcos")
    d4 = jsonschema.Draft4Validator
    pkg_dir = DEPLOY / "dcos"
    schemas = {
        n: load_json(pkg_dir / "schema" / n)
        for n in ("package-v4.schema.json", "resource.schema.json", "marathon-app.schema.json")
    }
    for n, s in schemas.items():
        try:
            d4.check_schema(s)
            c.check(True, "")
        except jsonschema.SchemaError as e:
            c.fail(f"schema/{n} is not a valid draft-04 schema: {e.message}")

    package = load_json(pkg_dir / "package.json")
    for e in schema_errors(d4, schemas["package-v4.schema.json"], package):
        c.fail(f"package.json: {e}")
    c.check(package.get("packagingVersion") == "4.0", "package.json: packagingVersion is not 4.0")
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    version = cargo["workspace"]["package"]["version"]
    c.check(package.get("version") == version,
            f"package.json: version {package.get('version')!r} != Cargo.toml's {version!r}")

    resource = load_json(pkg_dir / "resource.json")
    for e in schema_errors(d4, schemas["resource.schema.json"], resource):
        c.fail(f"resource.json: {e}")

    config = load_json(pkg_dir / "config.json")
    c.check(config.get("$schema") == "http://json-schema.org/draft-04/schema#",
            "config.json: $schema is not draft-04")
    try:
        d4.check_schema(config)
        c.check(True, "")
    except jsonschema.SchemaError as e:
        c.fail(f"config.json is not a valid draft-04 schema: {e.message}")
        return c.finish()
    # Universe's own check of config.json (repo/meta/schema/config-schema.json).
    c.check(config.get("type") == "object" and isinstance(config.get("properties"), dict),
            "config.json: not an object schema with properties")
    defaults = option_defaults(config, "", c)
    for e in schema_errors(d4, config, defaults):
        c.fail(f"config.json: the defaults do not validate: {e}")

    template = (pkg_dir / "marathon.json.mustache").read_text(encoding="utf-8")
    for path in option_paths(defaults):
        c.check(re.search(r"\{\{[#^]?\s*" + re.escape(path) + r"\s*\}\}", template) is not None,
                f"marathon.json.mustache does not use option {path}")
    for tag in re.findall(r"\{\{[#^/]?\s*(resource\.[^}\s]+)\s*\}\}", template):
        node = {"resource": resource}
        for part in tag.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        c.check(isinstance(node, str) and node, f"marathon.json.mustache: {tag} is not in resource.json")

    app_schema = schemas["marathon-app.schema.json"]
    for name, override in DCOS_VARIANTS.items():
        options = merge(defaults, override)
        for e in schema_errors(d4, config, options):
            c.fail(f"{name}: options do not validate against config.json: {e}")
        rendered = chevron.render(template, {**options, "resource": resource})
        try:
            app = json.loads(rendered)
        except json.JSONDecodeError as e:
            c.fail(f"{name}: the rendered template is not JSON: {e}\n{rendered}")
            continue
        errors = schema_errors(d4, app_schema, app)
        for e in errors:
            c.fail(f"{name}: rendered app: {e}")
        c.check(not errors, "")
        check_marathon_app(app, options, name, c)
        env = task_environment(app, c, name)
        if out:
            with open(os.path.join(out, f"dcos-env-{name}.json"), "w", encoding="utf-8") as f:
                json.dump(env, f, indent=2, sort_keys=True)
        if name == "defaults" and "CORRAL_AGENT_URL" in env:
            c.check(env["CORRAL_AGENT_URL"] == f"http://{TASK_HOST}:5051",
                    f"defaults: CORRAL_AGENT_URL {env['CORRAL_AGENT_URL']!r} is not the task's HOST")
        if name == "binary-persistent":
            c.check(env.get("CORRAL_AGENT_URL") == override["agent"]["url"],
                    f"{name}: agent.url does not reach the task: {env.get('CORRAL_AGENT_URL')!r}")
    return c.finish()


# ---------------------------------------------------------------------------------------------
# Kubernetes


def load_yaml_docs(path):
    import yaml

    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def validate_kubernetes(out):
    import kubernetes_validate

    c = Checks("kubernetes")
    files = {n: load_yaml_docs(DEPLOY / "kubernetes" / n) for n in ("daemonset.yaml", "example-app.yaml")}
    for fname, docs in files.items():
        for doc in docs:
            kn = f"{fname}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            for version in KUBERNETES_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                    c.check(True, "")
                except kubernetes_validate.ValidationError as e:
                    path = "/".join(str(p) for p in e.absolute_path) or "(root)"
                    c.fail(f"{kn} (Kubernetes {version}): {path}: {e.message}")
                except (kubernetes_validate.SchemaNotFoundError,
                        kubernetes_validate.VersionNotSupportedError) as e:
                    c.fail(f"{kn} (Kubernetes {version}): {e.message}")

    by_kind = {}
    for doc in files["daemonset.yaml"]:
        by_kind.setdefault(doc["kind"], []).append(doc)
    for kind in ("ServiceAccount", "ConfigMap", "DaemonSet"):
        c.check(len(by_kind.get(kind, [])) == 1, f"daemonset.yaml: expected one {kind}")
    if c.failures:
        return c.finish()
    sa, cm, ds = by_kind["ServiceAccount"][0], by_kind["ConfigMap"][0], by_kind["DaemonSet"][0]
    ns = ds["metadata"].get("namespace")
    for obj in (sa, cm):
        c.check(obj["metadata"].get("namespace") == ns, f"{obj['kind']} is not in namespace {ns}")
    for obj in by_kind.get("Namespace", []):
        c.check(obj["metadata"]["name"] == ns, f"Namespace {obj['metadata']['name']} != {ns}")

    spec = ds["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    c.check(all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()),
            "DaemonSet: the selector does not match the template's labels")
    c.check(pod.get("serviceAccountName") == sa["metadata"]["name"], "DaemonSet: serviceAccountName")
    c.check(pod.get("enableServiceLinks") is False,
            "DaemonSet: enableServiceLinks is not false (a Service named corral would inject "
            "CORRAL_* variables that Corral refuses at start)")
    c.check(pod.get("hostNetwork") is True, "DaemonSet: hostNetwork is not true")
    c.check(pod.get("dnsPolicy") == "ClusterFirstWithHostNet",
            "DaemonSet: dnsPolicy must be ClusterFirstWithHostNet with hostNetwork")
    psc = pod.get("securityContext", {})
    c.check(psc.get("runAsNonRoot") is True, "DaemonSet: pod runAsNonRoot")
    c.check(isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] != 0, "DaemonSet: pod runAsUser")
    containers = pod["containers"]
    c.check(len(containers) == 1, "DaemonSet: expected one container")
    ctr = containers[0]
    sc = ctr.get("securityContext", {})
    c.check(sc.get("allowPrivilegeEscalation") is False, "corral: allowPrivilegeEscalation")
    c.check(sc.get("readOnlyRootFilesystem") is True, "corral: readOnlyRootFilesystem")
    c.check(sc.get("capabilities", {}).get("drop") == ["ALL"], "corral: capabilities.drop [ALL]")
    c.check(not sc.get("capabilities", {}).get("add"), "corral: adds capabilities")
    c.check(sc.get("privileged") is not True, "corral: privileged")

    ports = {(p["containerPort"], p.get("protocol", "TCP")): p for p in ctr.get("ports", [])}
    for port, proto in ((8125, "UDP"), (9000, "TCP")):
        p = ports.get((port, proto))
        if c.check(p is not None, f"corral: no container port {port}/{proto}"):
            c.check(p.get("hostPort") == port, f"corral: port {port}/{proto} has no hostPort {port}")
    api_port_names = {p.get("name") for p in ctr.get("ports", []) if p["containerPort"] == 9000}
    for probe in ("livenessProbe", "readinessProbe"):
        get = ctr.get(probe, {}).get("httpGet", {})
        c.check(get.get("path") == "/v0/ping", f"corral: {probe} path {get.get('path')!r}")
        c.check(get.get("port") == 9000 or get.get("port") in api_port_names,
                f"corral: {probe} port {get.get('port')!r} is not the API port")
    res = ctr.get("resources", {})
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            c.check(r in res.get(kind, {}), f"corral: resources.{kind}.{r} missing")

    env = {e["name"]: e for e in ctr.get("env", [])}
    node = env.get("CORRAL_NODE_HOSTNAME", {}).get("valueFrom", {}).get("fieldRef", {})
    c.check(node.get("fieldPath") == "spec.nodeName", "corral: CORRAL_NODE_HOSTNAME is not spec.nodeName")
    for name, want in (("CORRAL_AGENT_URL", ""), ("CORRAL_STATSD_LISTEN", "0.0.0.0:8125"),
                       ("CORRAL_API_LISTEN", "0.0.0.0:9000")):
        c.check(env.get(name, {}).get("value") == want, f"corral: {name} is not {want!r}")

    # The configuration: --config points into the ConfigMap's mount; data_dir is a volume.
    args = ctr.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args[:-1] else None
    mounts = {m["mountPath"]: m for m in ctr.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    toml_text = None
    if c.check(config_path is not None, "corral: no --config argument"):
        mount_dir, key = os.path.split(config_path)
        m = mounts.get(mount_dir)
        vol = volumes.get(m["name"]) if m else None
        ok = vol is not None and vol.get("configMap", {}).get("name") == cm["metadata"]["name"]
        if c.check(ok, f"corral: {mount_dir} is not the ConfigMap's mount"):
            c.check(m.get("readOnly") is True, "corral: the ConfigMap mount is not read-only")
            toml_text = cm.get("data", {}).get(key)
            c.check(toml_text is not None, f"ConfigMap has no key {key}")
    if toml_text is not None:
        try:
            config = tomllib.loads(toml_text)
        except tomllib.TOMLDecodeError as e:
            c.fail(f"ConfigMap {config_path}: not TOML: {e}")
            config = {}
        data_dir = config.get("data_dir", "/var/lib/corral")
        m = mounts.get(data_dir)
        c.check(m is not None and not m.get("readOnly"),
                f"corral: data_dir {data_dir} is not a writable volume (the root fs is read-only)")
        if m is not None:
            vol = volumes.get(m["name"], {})
            c.check("emptyDir" in vol or "hostPath" in vol, f"corral: data_dir volume {vol!r}")
        if out:
            with open(os.path.join(out, "k8s-corral.toml"), "w", encoding="utf-8") as f:
                f.write(toml_text)
            literal = {}
            for name, e in env.items():
                if "value" in e:
                    literal[name] = e["value"]
                elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
                    literal[name] = NODE_NAME
            with open(os.path.join(out, "k8s-env.json"), "w", encoding="utf-8") as f:
                json.dump(literal, f, indent=2, sort_keys=True)

    # The example application: the node's IP and the DaemonSet's hostPort.
    apps = [d for d in files["example-app.yaml"] if d["kind"] in ("Deployment", "Pod", "DaemonSet")]
    c.check(len(apps) == 1, "example-app.yaml: expected one workload")
    for app in apps:
        pod_spec = app["spec"]["template"]["spec"] if "template" in app["spec"] else app["spec"]
        for ctr in pod_spec["containers"]:
            env = {e["name"]: e for e in ctr.get("env", [])}
            host = env.get("STATSD_UDP_HOST", {}).get("valueFrom", {}).get("fieldRef", {})
            c.check(host.get("fieldPath") == "status.hostIP",
                    f"example-app {ctr['name']}: STATSD_UDP_HOST is not status.hostIP")
            c.check(env.get("STATSD_UDP_PORT", {}).get("value") == "8125",
                    f"example-app {ctr['name']}: STATSD_UDP_PORT is not \"8125\"")
    return c.finish()


# ---------------------------------------------------------------------------------------------
# Docker


def validate_docker():
    from dockerfile_parse import DockerfileParser

    c = Checks("docker")
    path = DEPLOY / "docker" / "Dockerfile"
    parser = DockerfileParser(path=str(path), cache_content=False)
    instructions = [i for i in parser.structure if i["instruction"] != "COMMENT"]
    stages = []
    for i in instructions:
        if i["instruction"] == "FROM":
            stages.append([])
        if not stages:
            c.check(i["instruction"] in ("ARG",), f"Dockerfile: {i['instruction']} before FROM")
            continue
        stages[-1].append(i)
    if not c.check(len(stages) == 2, f"Dockerfile: {len(stages)} stages, expected build + runtime"):
        return c.finish()
    build, final = stages

    m = re.fullmatch(r"rust:(\d+)\.(\d+)(?:\.(\d+))?-(slim-)?bookworm\s+AS\s+build", build[0]["value"], re.I)
    if c.check(m is not None, f"Dockerfile: build stage FROM {build[0]['value']!r}"):
        cargo = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
        need = tuple(int(x) for x in cargo["workspace"]["package"]["rust-version"].split("."))
        have = (int(m.group(1)), int(m.group(2)))
        c.check(have >= need[:2], f"Dockerfile: Rust {have} is older than rust-version {need}")
    runs = " ".join(i["value"] for i in build if i["instruction"] == "RUN")
    c.check("cargo build --release --locked" in runs, "Dockerfile: no `cargo build --release --locked`")
    envs = " ".join(i["value"] for i in build if i["instruction"] == "ENV")
    c.check("LIBZ_SYS_STATIC=1" in envs, "Dockerfile: zlib is not linked statically (LIBZ_SYS_STATIC=1)")
    build_args = [i["value"].split("=", 1)[0].strip() for i in build if i["instruction"] == "ARG"]
    c.check("CORRAL_BUILD_COMMIT" in build_args,
            "Dockerfile: the build stage does not take the CORRAL_BUILD_COMMIT build arg "
            "(build.rs reads it; .git is not in the build context)")

    c.check(final[0]["value"].strip() == "gcr.io/distroless/cc-debian12:nonroot",
            f"Dockerfile: runtime stage FROM {final[0]['value']!r}")
    c.check(parser.baseimage == "gcr.io/distroless/cc-debian12:nonroot", "Dockerfile: base image")
    users = [i["value"].strip() for i in final if i["instruction"] == "USER"]
    c.check(users and users[-1] in ("nonroot", "65532", "65532:65532", "nonroot:nonroot"),
            f"Dockerfile: the runtime stage's last USER is {users[-1:]!r}, not nonroot")
    exposes = " ".join(i["value"] for i in final if i["instruction"] == "EXPOSE").split()
    c.check(sorted(exposes) == ["8125/udp", "9000/tcp"], f"Dockerfile: EXPOSE {exposes!r}")
    entry = [i["value"] for i in final if i["instruction"] == "ENTRYPOINT"]
    try:
        entry_ok = len(entry) == 1 and json.loads(entry[0]) == ["/usr/local/bin/corral"]
    except json.JSONDecodeError:
        entry_ok = False
    c.check(entry_ok, f"Dockerfile: ENTRYPOINT {entry!r} is not [\"/usr/local/bin/corral\"] (exec form)")
    c.check(not any(i["instruction"] == "CMD" for i in final),
            "Dockerfile: the runtime stage has a CMD (Corral runs on its defaults; configure it by CORRAL_* variables or --config)")
    c.check(not any(i["instruction"] == "ENV" and "CORRAL_" in i["value"] for i in final),
            "Dockerfile: CORRAL_* variables in the image would override a mounted --config file")
    copies = [i["value"] for i in final if i["instruction"] == "COPY"]
    c.check(any(v.startswith("--from=build") and v.split()[-1] == "/usr/local/bin/corral" for v in copies),
            "Dockerfile: the binary is not copied from the build stage to /usr/local/bin/corral")
    c.check(not any(i["instruction"] in ("RUN", "ADD") for i in final),
            "Dockerfile: the distroless runtime stage cannot RUN (no shell) and should not ADD")

    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split("\n")
    patterns = {ln.strip() for ln in ignore if ln.strip() and not ln.startswith("#")}
    for want in (".git", "target", "corral-data"):
        c.check(want in patterns, f".dockerignore does not exclude {want}")
    c.check("fuzz/target" in patterns or "**/target" in patterns, ".dockerignore does not exclude fuzz/target")
    for keep in ("benches", "tests", "proto", "src", "crates", "Cargo.lock"):
        c.check(not any(p.rstrip("/") == keep for p in patterns),
                f".dockerignore excludes {keep}, which the build needs")

    build_sh = DEPLOY / "docker" / "build.sh"
    r = subprocess.run(["bash", "-n", str(build_sh)], capture_output=True, text=True)
    c.check(r.returncode == 0, f"build.sh: bash -n: {r.stderr.strip()}")
    c.check(os.access(build_sh, os.X_OK), "build.sh is not executable")
    c.check('--build-arg CORRAL_BUILD_COMMIT=' in build_sh.read_text(encoding="utf-8"),
            "build.sh does not pass the commit as the CORRAL_BUILD_COMMIT build arg")
    return c.finish()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("family", choices=["dcos", "kubernetes", "docker", "all"])
    ap.add_argument("--out", help="directory for the extracted configurations and environments")
    a = ap.parse_args()
    missing = []
    for module in ("jsonschema", "chevron", "kubernetes_validate", "dockerfile_parse", "yaml"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        print(f"validate.py: {sys.executable} lacks {', '.join(missing)}; "
              "run .ci/setup.d/40-deploy-tools.sh (or .ci/run)", file=sys.stderr)
        return 2
    if a.out:
        os.makedirs(a.out, exist_ok=True)
    rc = 0
    if a.family in ("dcos", "all"):
        rc |= validate_dcos(a.out)
    if a.family in ("kubernetes", "all"):
        rc |= validate_kubernetes(a.out)
    if a.family in ("docker", "all"):
        rc |= validate_docker()
    return rc


if __name__ == "__main__":
    sys.exit(main())
