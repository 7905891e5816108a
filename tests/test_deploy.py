"""deploy/ agrees with the code: every file parses; every config it embeds (the image's default, the
compose file's, the ConfigMap's) loads through `registry.settings.load_settings` with the
environment those files set, and builds a storage driver; probe and health-check paths are in the
route table; ports, users, mounts and the command line agree with each other and with the CLI.
No container engine is needed: nothing is built or run.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from registry.__main__ import _parser
from registry.handlers.health import PROBE_TIMEOUT
from registry.routes import TABLE
from registry.settings import Settings, describe, load_settings
from registry.store import storage_driver

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CONFIG_PATH = "/etc/cargobay/config.yaml"


# -- helpers -----------------------------------------------------------------------------------------
def routes_with(method: str) -> set[str]:
    return {path for path, methods in TABLE if method in methods}


def load_config_text(text: str, tmp_path: Path, environ: Mapping[str, str], name: str = "config.yaml") -> Settings:
    path = tmp_path / name
    path.write_text(text)
    return load_settings(path, environ=dict(environ))


def check_cli(argv: list[str]) -> str:
    """`registry serve --config X` as the CLI parses it; returns X."""
    assert argv[0] == "registry", argv
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["registry"] == "registry.__main__:main"
    args = _parser().parse_args(argv[1:])
    assert args.command == "serve"
    return str(args.config)


_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """Compose's `${VAR}` / `${VAR:-default}` substitution, everywhere in a parsed compose file."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: environ.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [interpolate(item, environ) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, environ) for key, item in value.items()}
    return value


def healthz_port(command: list[str]) -> int:
    """The port of the http://127.0.0.1:PORT/healthz URL inside a health-check command."""
    (url,) = re.findall(r"http://[\w.]+:\d+/healthz", " ".join(command))
    assert urlsplit(url).path in routes_with("GET")
    return int(urlsplit(url).port or 0)


# -- every file parses -------------------------------------------------------------------------------
def test_every_yaml_file_parses() -> None:
    files = sorted([*DEPLOY.glob("*.yaml"), *K8S.glob("*.yaml")])
    assert {f.name for f in files} >= {"compose.yaml", "config.yaml", "configmap.yaml", "secret.yaml",
                                        "deployment.yaml", "service.yaml", "kustomization.yaml"}
    for path in files:
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert docs and all(isinstance(doc, dict) for doc in docs), path
    assert (DEPLOY / "README.md").read_text().startswith("# Deploying Cargobay")


def test_health_route_needs_no_credentials() -> None:
    from registry import access

    methods = dict(TABLE)["/healthz"]
    assert set(methods) == {"GET", "HEAD"} and all(ep.needs is access.public for ep in methods.values())


# -- the Dockerfile ----------------------------------------------------------------------------------
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_dockerfile_is_slim_non_root_and_runs_the_cli(tmp_path: Path) -> None:
    steps = dockerfile()
    bases = [args.split()[0] for op, args in steps if op == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    uid = int(users[-1].split(":")[0])

    (cmd,) = [json.loads(args) for op, args in final if op == "CMD"]
    assert not [args for op, args in final if op == "ENTRYPOINT"]
    assert check_cli(cmd) == CONFIG_PATH

    # The config the image carries is the one CMD reads, and it is valid.
    copies = [args.split() for op, args in final if op == "COPY" and not args.startswith("--from")]
    assert ["deploy/config.yaml", CONFIG_PATH] in copies
    settings = load_config_text((DEPLOY / "config.yaml").read_text(), tmp_path, {})
    assert settings.http.host == "0.0.0.0"
    storage_driver(settings)

    # EXPOSE, the HEALTHCHECK and the config agree on the port; the health check hits a real route.
    (expose,) = [args for op, args in final if op == "EXPOSE"]
    assert int(expose) == settings.http.port
    (health,) = [args for op, args in final if op == "HEALTHCHECK"]
    assert healthz_port(json.loads(health[health.index("CMD") + 3:].strip())) == settings.http.port
    timeout = re.search(r"--timeout=(\d+)s", health)
    assert timeout and int(timeout.group(1)) > PROBE_TIMEOUT and "--interval=" in health

    # Every source the build copies exists, and the packages are the ones pyproject installs.
    for op, args in steps:
        if op == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
    includes = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {args.split()[0] for op, args in steps if op == "COPY" and not args.startswith("--from")}
    assert {pattern.rstrip("*") for pattern in includes} <= copied
    run = " ".join(args for op, args in final if op == "RUN")
    assert "[s3]" in run and f"--uid {uid}" in run  # boto3 is in, and the user exists

    ignore = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*" and {
        "!ocispec/", "!storage/", "!registry/", "!puller/", "!deploy/config.yaml"
    } <= set(ignore)


# -- compose -----------------------------------------------------------------------------------------
def compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load((DEPLOY / "compose.yaml").read_text()), {})


def test_compose_configs_load_and_agree(tmp_path: Path) -> None:
    spec = compose()
    services = spec["services"]
    registries = {name: svc for name, svc in services.items() if svc.get("build") or "cargobay" in svc.get("image", "")}
    assert len(registries) >= 2, list(services)
    s3_host, s3_port = "", 0
    for name, svc in registries.items():
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        (mount,) = [c for c in svc["configs"] if c["target"] == CONFIG_PATH]
        text = spec["configs"][mount["source"]]["content"]
        settings = load_config_text(text, tmp_path, svc.get("environment", {}), f"{name}.yaml")
        s3 = settings.storage.s3
        assert settings.storage.driver == "s3" and s3.addressing_style == "path" and s3.bucket
        assert s3.secret_key == svc["environment"]["CARGOBAY_STORAGE_S3_SECRET_KEY"] != ""
        assert load_config_text(text, tmp_path, {}, f"{name}-bare.yaml").storage.s3.secret_key == ""  # not in the file
        driver = storage_driver(settings)  # the options are ones the S3 driver accepts (no network yet)
        assert driver.name == "s3"
        endpoint = urlsplit(s3.endpoint_url)
        s3_host, s3_port = endpoint.hostname or "", endpoint.port or 80
        assert settings.http.host == "0.0.0.0"
        port = settings.http.port

    # S3 is the SeaweedFS service, on the port its command opens, with the identity the replicas use.
    weed = services[s3_host]
    assert f"-s3.port={s3_port}" in weed["command"]
    assert healthz_port(weed["healthcheck"]["test"]) == s3_port
    identity_target = next(arg.split("=", 1)[1] for arg in weed["command"] if arg.startswith("-s3.config="))
    (identity_mount,) = [c for c in weed["configs"] if c["target"] == identity_target]
    identities = json.loads(spec["configs"][identity_mount["source"]]["content"])["identities"]
    keys = {(cred["accessKey"], cred["secretKey"]) for ident in identities for cred in ident["credentials"]}
    for svc in registries.values():
        assert (s3.access_key, svc["environment"]["CARGOBAY_STORAGE_S3_SECRET_KEY"]) in keys

    # The bucket job creates the bucket the config names, against SeaweedFS's master.
    job = " ".join(services["bucket"]["command"])
    assert f"s3.bucket.create -name {s3.bucket}" in job and f"-master={s3_host}:" in job
    for svc in registries.values():
        assert svc["depends_on"]["bucket"]["condition"] == "service_completed_successfully"

    # nginx: upstream = the registry services on their port; it listens where compose publishes it.
    proxy = services["proxy"]
    (conf_mount,) = [v for v in proxy["volumes"] if v.endswith(":/etc/nginx/nginx.conf:ro")]
    nginx = (DEPLOY / conf_mount.split(":")[0]).read_text()
    upstreams = set(re.findall(r"^\s*server\s+([\w-]+):(\d+)", nginx, re.M))
    assert upstreams == {(name, str(port)) for name in registries}
    (listen,) = re.findall(r"^\s*listen\s+(\d+);", nginx, re.M)
    assert any(p.split(":")[-1] == listen for p in proxy["ports"])
    assert re.search(r"client_max_body_size\s+0;", nginx) and re.search(r"proxy_request_buffering\s+off;", nginx)
    for path in re.findall(r"location\s+=?\s*(\S+)\s*\{", nginx):
        assert path == "/" or path in routes_with("GET"), path
    assert {proxy["depends_on"][name]["condition"] for name in registries} == {"service_healthy"}


# -- Kubernetes --------------------------------------------------------------------------------------
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_k8s_manifests_agree_with_the_settings_routes_and_cli(tmp_path: Path) -> None:
    docs = k8s()
    (deployment,) = [doc for (kind, _), doc in docs.items() if kind == "Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}

    # The config: the ConfigMap key mounted at the path the command line reads.
    config_path = check_cli(container.get("command", []) + container["args"])
    mount = mounts[config_path]
    configmap = docs[("ConfigMap", volumes[mount["name"]]["configMap"]["name"])]
    text = configmap["data"][mount["subPath"]]

    # Its environment: the Secrets' keys (envFrom) and the plain env entries.
    environ: dict[str, str] = {e["name"]: e["value"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        secret = docs[("Secret", source["secretRef"]["name"])]
        environ.update(secret.get("stringData", {}))
    known = {info.env for info in describe()}
    assert {name for name in environ if name.startswith("CARGOBAY_")} <= known
    settings = load_config_text(text, tmp_path, environ)
    assert settings.storage.driver == "s3" and settings.storage.s3.bucket
    assert settings.storage.s3.access_key == environ["CARGOBAY_STORAGE_S3_ACCESS_KEY"]
    assert settings.storage.s3.secret_key == environ["CARGOBAY_STORAGE_S3_SECRET_KEY"]
    bare = load_config_text(text, tmp_path, {}, "bare.yaml").storage.s3
    assert bare.secret_key == bare.access_key == ""  # credentials are not in the ConfigMap
    storage_driver(settings)

    # Files the auth settings name are keys of a mounted Secret.
    if settings.auth.enabled:
        for path in (settings.auth.htpasswd, settings.auth.rules, settings.auth.token.key):
            directory, _, name = path.rpartition("/")
            secret_volume = volumes[mounts[directory]["name"]]["secret"]
            assert name in docs[("Secret", secret_volume["secretName"])]["stringData"], path

    # Ports and probes: the API's, and the metrics listener's when it has one of its own.
    ports = {p["name"]: p for p in container["ports"]}
    port = ports["http"]
    assert port["containerPort"] == settings.http.port and settings.http.host == "0.0.0.0"
    if settings.metrics.listen:
        assert ports["metrics"]["containerPort"] == int(settings.metrics.listen.rpartition(":")[2])
    assert set(ports) <= {"http", "metrics"}
    probes = {
        kind: container[kind] for kind in ("readinessProbe", "livenessProbe", "startupProbe") if kind in container
    }
    assert {"readinessProbe", "livenessProbe"} <= set(probes)
    for kind, probe in probes.items():
        assert probe["httpGet"]["path"] == "/healthz", kind
        assert probe["httpGet"]["path"] in routes_with("GET")
        assert probe["httpGet"]["port"] in (port["name"], port["containerPort"]), kind
        assert probe.get("timeoutSeconds", 1) > PROBE_TIMEOUT, kind  # /healthz answers within PROBE_TIMEOUT

    # Non-root, as the image is.
    security = pod["securityContext"]
    image_user = [args for op, args in dockerfile() if op == "USER"][-1].split(":")[0]
    assert security["runAsNonRoot"] is True and str(security["runAsUser"]) == image_user

    # The Service reaches the pods on the named port; the budget keeps more than one up.
    (service,) = [doc for (kind, _), doc in docs.items() if kind == "Service"]
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] in (port["name"], port["containerPort"])
    budgets = [doc for (kind, _), doc in docs.items() if kind == "PodDisruptionBudget"]
    assert all(b["spec"]["minAvailable"] < spec["replicas"] for b in budgets)


@pytest.mark.parametrize("readme", ["README.md", "deploy/README.md"])
def test_readmes_name_only_real_files_and_commands(readme: str) -> None:
    text = (ROOT / readme).read_text()
    for path in re.findall(r"`(deploy/[\w./-]+)`", text):
        assert (ROOT / path).exists(), path
    for line in re.findall(r"^(?:\.venv/bin/)?registry serve[^\n`]*", text, re.M):
        argv = shlex.split(line.split("#")[0])
        _parser().parse_args(argv[1:])
