"""Deployment configs and the security rules of the code base; fast, no Ray cluster, no cloud.

- `cluster.yaml` validates against the JSON schema inside the installed ray package (and through
  ray's own config preparation), and has the shape the docs promise: head, CPU synthesis pool and GPU
  training pool starting at 0 nodes, custom resources, the dashboard on 127.0.0.1, token auth, the
  Makefile's install.
- The KubeRay manifests (`deploy/kuberay/`) are parsed and their structure checked (there is no
  Kubernetes here).
- Every YAML file in the repository loads with `yaml.safe_load_all`.
- Security scan of the Python code (fdsl/, benchmarks/, tests/): no unpickling except through an
  `Unpickler` with a `find_class` allow-list or at the call sites of the explicit allow-list below
  (PICKLE_ALLOWED, or `# fdsl-security: allow-pickle: <reason>` at the call); no `torch.load`
  without `weights_only=True`; no `yaml.load`/`unsafe_load`/`full_load`. In shipped files: no
  dashboard bound to all interfaces, no token authentication switched off.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
KUBERAY = ROOT / "deploy" / "kuberay"
RAY_SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"

SYNTH_POOL, GPU_POOL = "synth-cpu", "train-gpu"
SYNTH_RESOURCE, TRAIN_RESOURCE = "synth", "train_gpu"


def repo_files() -> list[Path]:
    """Files git tracks or would track (ignored paths such as .venv and runs/ left out)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return sorted({ROOT / name for name in out.split("\0") if name and (ROOT / name).is_file()})


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(RAY_SCHEMA.read_text())


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


# ---------------------------------------------------------------------------------------- cluster.yaml
def test_cluster_yaml_validates_against_rays_schema(schema, cluster):
    jsonschema.validate(cluster, schema)


@pytest.mark.parametrize("breakage", ["string min_workers", "unknown key", "fractional resource",
                                      "no provider"])
def test_broken_cluster_yaml_is_rejected(schema, cluster, breakage):
    bad = copy.deepcopy(cluster)
    if breakage == "string min_workers":
        bad["available_node_types"][SYNTH_POOL]["min_workers"] = "0"
    elif breakage == "unknown key":
        bad["idle_timeout"] = 5
    elif breakage == "fractional resource":
        bad["available_node_types"][GPU_POOL]["resources"]["GPU"] = 0.5
    else:
        del bad["provider"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_cluster_yaml_passes_rays_own_preparation(cluster):
    # What `ray up` does before launching anything: fill in the provider's defaults, then validate
    # (also checks that head_node_type names a node type). Private API of the pinned ray version.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_cluster_pools_start_empty_and_scale_to_a_bound(cluster):
    types = cluster["available_node_types"]
    assert set(types) == {cluster["head_node_type"], SYNTH_POOL, GPU_POOL}
    assert cluster["idle_timeout_minutes"] > 0
    for name in (SYNTH_POOL, GPU_POOL):
        assert types[name]["min_workers"] == 0, name
        assert types[name]["max_workers"] >= 1, name
    assert sum(types[n]["max_workers"] for n in (SYNTH_POOL, GPU_POOL)) <= cluster["max_workers"]


def test_cluster_custom_resources_separate_synthesis_from_training(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]["resources"]
    synth = types[SYNTH_POOL]["resources"]
    gpu = types[GPU_POOL]["resources"]
    assert head.get("CPU") == 0, "no synthesis or training task may land on the head"
    assert synth[SYNTH_RESOURCE] == synth["CPU"] > 0 and not synth.get("GPU")
    assert gpu["GPU"] > 0 and gpu[TRAIN_RESOURCE] == gpu["GPU"] and SYNTH_RESOURCE not in gpu
    # The resource name is one that the synthesis config accepts (`--set synthesis.task_resource=synth`).
    from fdsl.presets import get_preset

    exp = get_preset("debug-fractaldb", [f"synthesis.task_resource={SYNTH_RESOURCE}"])
    assert exp.synthesis.task_resource == SYNTH_RESOURCE


def test_cluster_dashboard_local_and_token_auth_on(cluster):
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in head
    for cmds in (cluster["head_start_ray_commands"], cluster["worker_start_ray_commands"]):
        start = [c for c in cmds if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), start
    # Every node gets the same token: the launching user's ~/.ray/auth_token.
    assert cluster["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


def test_cluster_installs_fdsl_like_the_makefile(cluster):
    mounts = cluster["file_mounts"]
    for remote, local in mounts.items():  # the repository paths it copies exist
        if local.startswith("./"):
            assert (ROOT / local).exists(), (remote, local)
    assert {"~/fdsl/Makefile", "~/fdsl/pyproject.toml", "~/fdsl/fdsl"} <= set(mounts)
    assert any(re.search(r"cd ~/fdsl && make install\b", c) for c in cluster["setup_commands"])
    # ... and `make install` is the documented order: torch, deps, deepspeed --no-build-isolation, fdsl.
    recipe = (ROOT / "Makefile").read_text().split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    installer = re.search(r"^UV := (.*)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert "uv pip install" in installer and "--compile-bytecode" in installer  # see the Makefile
    pips = [line.strip() for line in recipe.splitlines() if line.strip().startswith("$(UV) ")]
    assert "$(TORCH)" in pips[0]
    deepspeed = [i for i, line in enumerate(pips) if "deepspeed" in line]
    assert len(deepspeed) == 1 and "--no-build-isolation" in pips[deepspeed[0]]
    assert 0 < deepspeed[0] < len(pips) - 1 and "-e " in pips[-1]
    # The dashboard extra matches the installed (pinned) ray.
    assert f'"ray[default]=={ray.__version__}"' in " ".join(cluster["setup_commands"])


# ------------------------------------------------------------------------------------------ KubeRay
def load_manifest(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d is not None]
    assert len(docs) == 1, name
    return docs[0]


def ray_start_resources(group: dict) -> dict:
    """The custom resources of a group's rayStartParams (KubeRay strips the outer quotes)."""
    text = group["rayStartParams"].get("resources", "{}")
    return json.loads(text.strip("'\"` ").replace('\\"', '"'))


def containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def check_cluster_spec(spec: dict, groups: set[str]) -> None:
    assert spec["rayVersion"] == ray.__version__
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress")
    assert head["rayStartParams"].get("dashboard-host", "") in ("", "127.0.0.1")  # KubeRay default
    assert head["rayStartParams"]["num-cpus"] == "0"
    by_name = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(by_name) == groups
    for name, group in by_name.items():
        assert group["minReplicas"] == 0 and group.get("replicas", 0) == 0, name
        assert group["maxReplicas"] >= 1, name
        assert len(containers(group)) == 1, name
    synth = by_name[SYNTH_POOL]
    limits = containers(synth)[0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits
    assert ray_start_resources(synth) == {SYNTH_RESOURCE: int(limits["cpu"])}
    if GPU_POOL in by_name:
        gpu = by_name[GPU_POOL]
        res = containers(gpu)[0]["resources"]
        gpus = int(res["limits"]["nvidia.com/gpu"])
        assert gpus > 0 and res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
        assert ray_start_resources(gpu) == {TRAIN_RESOURCE: gpus}
    images = {c["image"] for g in [head, *by_name.values()] for c in containers(g)}
    assert len(images) == 1, images
    pvc = load_manifest("shared-pvc.yaml")
    for group in [head, *by_name.values()]:
        claims = [v["persistentVolumeClaim"]["claimName"] for v in group["template"]["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]
        assert claims == [pvc["metadata"]["name"]]


def test_kuberay_raycluster_structure():
    rc = load_manifest("raycluster.yaml")
    assert (rc["apiVersion"], rc["kind"]) == ("ray.io/v1", "RayCluster")
    check_cluster_spec(rc["spec"], {SYNTH_POOL, GPU_POOL})


def test_kuberay_rayjob_structure():
    job = load_manifest("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    args = spec["entrypoint"].split()
    assert args[:3] == ["python", "-m", "fdsl.jobs.generate"]
    # The arguments are those of `fdsl generate`: parse them with its parser, build the preset.
    from fdsl.cli import build_parser
    from fdsl.presets import get_preset

    parsed = build_parser().parse_args(["generate", *args[3:]])
    assert parsed.preset == "debug-fractaldb" and parsed.out.startswith("/mnt/fdsl/")  # shared volume
    exp = get_preset(parsed.preset, parsed.overrides)
    assert exp.synthesis.task_resource == SYNTH_RESOURCE
    check_cluster_spec(spec["rayClusterSpec"], {SYNTH_POOL})


def test_kuberay_shared_volume_is_read_write_many():
    pvc = load_manifest("shared-pvc.yaml")
    assert (pvc["apiVersion"], pvc["kind"]) == ("v1", "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kuberay_image_is_built_on_the_pinned_ray():
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(ray.__version__)}-", dockerfile, re.M)
    assert "make install" in dockerfile


def test_job_modules_named_in_configs_exist():
    configs = [CLUSTER_YAML, *sorted(KUBERAY.iterdir())]
    modules = {m for p in configs for m in re.findall(r"python -m (fdsl\.jobs\.\w+)", p.read_text())}
    assert "fdsl.jobs.generate" in modules
    for module in modules:
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module


# ---------------------------------------------------------------------------------------- all YAML
def yaml_files() -> list[Path]:
    return [p for p in repo_files() if p.suffix in (".yaml", ".yml")]


def test_repository_has_the_shipped_yaml_files():
    names = {p.relative_to(ROOT).as_posix() for p in yaml_files()}
    assert {"cluster.yaml", "deploy/kuberay/raycluster.yaml", "deploy/kuberay/rayjob.yaml",
            "deploy/kuberay/shared-pvc.yaml"} <= names


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_yaml_file_loads_with_safe_load(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} holds no YAML document"


# ---------------------------------------------------------------------------------------- security
# Unpickling runs code chosen by whoever wrote the file. It is allowed only (a) through an
# `Unpickler` subclass whose `find_class` admits an explicit list of types (how
# fdsl/platform/targets.py reads CIFAR batches), or (b) at a call site listed here, or marked in
# the code with ALLOW_PICKLE and a reason. Keep both lists short.
ALLOW_PICKLE = "# fdsl-security: allow-pickle:"
"""Marker allowing an unpickling call on its line (or the line above), followed by the reason, e.g.
`# fdsl-security: allow-pickle: reads back the batch this test just wrote`."""

PICKLE_ALLOWED: dict[tuple[str, str], str] = {}
"""(file, call) -> why it is safe: call sites allowed without a marker in the file."""

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve"}
PICKLE_FUNCS = {"load", "loads", "Unpickler", "open"}
UNPICKLER_CLASSES = {f"{m}.Unpickler" for m in ("pickle", "_pickle", "cPickle", "dill")}
YAML_UNSAFE = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _kwarg_is_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in call.keywords)


def security_findings(source: str, filename: str = "<src>") -> list[tuple[str, int, str, str]]:
    """Unsafe deserialisation in Python source: (file, line, call, problem) per finding."""
    tree = ast.parse(source, filename)
    lines = source.splitlines()
    imported: dict[str, str] = {}  # local name -> what it names: np -> numpy, load -> pickle.load
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update({a.asname: a.name for a in node.names if a.asname})
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})

    def resolve(expr: ast.AST) -> str:
        head, _, rest = _dotted(expr).partition(".")
        return ".".join(filter(None, [imported.get(head, head), rest]))

    def marked(node: ast.AST) -> bool:
        span = lines[max(0, node.lineno - 2):node.end_lineno]
        return any(re.search(re.escape(ALLOW_PICKLE) + r"\s*\S{3,}", line) for line in span)

    findings = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.ClassDef) and any(resolve(b) in UNPICKLER_CLASSES for b in node.bases)
                and not any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in node.body)):
            findings.append((filename, node.lineno, node.name,
                             "Unpickler subclass without a find_class allow-list"))
        if not isinstance(node, ast.Call):
            continue
        name = resolve(node.func)
        module, _, func = name.rpartition(".")
        if module in PICKLE_MODULES and func in PICKLE_FUNCS or name == "pandas.read_pickle":
            problem = "unpickles" if not marked(node) else ""
        elif name == "numpy.load" and _kwarg_is_true(node, "allow_pickle"):
            problem = "unpickles (allow_pickle=True)" if not marked(node) else ""
        elif name == "torch.load" and not _kwarg_is_true(node, "weights_only"):
            problem = "unpickles: pass weights_only=True (or use safetensors)"
        elif module == "yaml" and func in YAML_UNSAFE:
            problem = "can build arbitrary objects: use yaml.safe_load"
        else:
            problem = ""
        if problem:
            findings.append((filename, node.lineno, name, problem))
    return findings


@pytest.mark.parametrize("source", [
    "import pickle\npickle.load(open('x', 'rb'))",
    "import pickle\nx = pickle.loads(b'')",
    "from pickle import load\nload(f)",
    "import cloudpickle as cp\ncp.loads(b)",
    "import pandas as pd\npd.read_pickle('x.pkl')",
    "import shelve\nshelve.open('db')",
    "import numpy as np\nnp.load('x.npy', allow_pickle=True)",
    "import torch\ntorch.load('w.pt')",
    "import torch as th\nth.load('w.pt')",
    "import torch\ntorch.load('w.pt', weights_only=False)",
    "import yaml\nyaml.load(s, Loader=yaml.Loader)",
    "from yaml import unsafe_load\nunsafe_load(s)",
    "import yaml\nyaml.full_load(s)",
    "import pickle\nclass U(pickle.Unpickler):\n    pass",
    "import pickle\npickle.load(f)  # fdsl-security: allow-pickle:",  # a marker needs a reason
])
def test_security_scan_catches(source):
    assert security_findings(source), source


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load('w.pt', weights_only=True, map_location='cpu')",
    "import yaml\nyaml.safe_load(s)\nyaml.safe_load_all(s)",
    "import numpy as np\nnp.load('x.npy')",
    "import pickle\npickle.dumps(x)\npickle.dump(x, f)",
    "import pickle\n# fdsl-security: allow-pickle: CIFAR batches, numpy only\nd = pickle.load(f)",
    "import pickle\nd = pickle.load(f, encoding='bytes')  # fdsl-security: allow-pickle: CIFAR batches",
    "import pickle\nclass U(pickle.Unpickler):\n    def find_class(self, m, n):\n        raise KeyError",
    "from safetensors.torch import load_file\nload_file('m.safetensors')",
])
def test_security_scan_allows(source):
    assert security_findings(source) == [], source


def python_files() -> list[Path]:
    top = ("fdsl/", "benchmarks/", "tests/")
    return [p for p in repo_files() if p.suffix == ".py" and p.relative_to(ROOT).as_posix().startswith(top)]


def test_no_unsafe_deserialisation_in_the_code_base():
    files = python_files()
    assert any(p.name == "cli.py" for p in files) and any(p.name == "test_deploy.py" for p in files)
    findings = [f"{file}:{line}: {call}: {problem}" for p in files
                for file, line, call, problem in security_findings(p.read_text(),
                                                                   p.relative_to(ROOT).as_posix())
                if (file, call) not in PICKLE_ALLOWED]
    assert findings == [], "\n".join(findings)


def test_pickle_allow_list_is_current_and_short():
    for (file, call), reason in PICKLE_ALLOWED.items():
        assert reason and call.split(".")[-1] + "(" in (ROOT / file).read_text(), f"stale entry {file}"
    marked = [f"{p.relative_to(ROOT)}:{i}" for p in python_files() if p.name != "test_deploy.py"
              for i, line in enumerate(p.read_text().splitlines(), 1) if ALLOW_PICKLE in line]
    assert len(PICKLE_ALLOWED) + len(marked) <= 4, f"unpickling is the exception: {marked}"


PUBLIC_DASHBOARD = re.compile(r"dashboard[-_]host[\"']?\s*[=:\s]\s*[\"']?(0\.0\.0\.0|::)(?![0-9a-f])")
AUTH_OFF = re.compile(r"RAY_AUTH_MODE[\"']?\s*[=:]\s*[\"']?disabled|mode:\s*[\"']?disabled")
SHIPPED = (".py", ".yaml", ".yml", ".toml", ".cfg", ".sh", ".json", ".md")


def shipped_files() -> list[Path]:
    """Code, configs and docs (this test file excluded: it spells the patterns out)."""
    return [p for p in repo_files() if p != Path(__file__).resolve()
            and (p.suffix in SHIPPED or p.name in ("Makefile", "Dockerfile") or p.parent.name == ".ci")]


def test_no_dashboard_bound_to_all_interfaces():
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in shipped_files()
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
            if PUBLIC_DASHBOARD.search(line)]
    assert hits == [], "\n".join(hits)


def test_token_auth_never_switched_off_in_configs():
    configs = [p for p in shipped_files() if p.suffix in (".yaml", ".yml", ".sh", ".toml")
               or p.name in ("Makefile", "Dockerfile") or p.parent.name == ".ci"]
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in configs
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
            if AUTH_OFF.search(line)]
    assert hits == [], "\n".join(hits)


@pytest.mark.parametrize("line,public", [
    ("ray start --head --dashboard-host=0.0.0.0", True),
    ("ray start --head --dashboard-host 0.0.0.0", True),
    ('ray.init(dashboard_host="0.0.0.0")', True),
    ('rayStartParams: {dashboard-host: "0.0.0.0"}', True),
    ("--dashboard-host=::", True),
    ("ray start --head --dashboard-host=127.0.0.1", False),
    ('ray.init(dashboard_host="127.0.0.1")', False),
])
def test_dashboard_pattern(line, public):
    assert bool(PUBLIC_DASHBOARD.search(line)) is public


def test_local_cluster_mirrors_the_cloud_pools():
    """deploy/local/cluster.yaml: the pools of cluster.yaml (head with no CPU, a synth pool with the
    `synth` resource, a training pool with `train_gpu`), both starting empty, through the provider
    subclass that replaces lost nodes."""
    import yaml

    cloud = yaml.safe_load(CLUSTER_YAML.read_text())["available_node_types"]
    local = yaml.safe_load((ROOT / "deploy" / "local" / "cluster.yaml").read_text())
    types = local["available_node_types"]
    assert types[local["head_node_type"]]["resources"]["CPU"] == cloud["head"]["resources"]["CPU"] == 0
    assert "synth" in types["synth-cpu"]["resources"] and "synth" in cloud["synth-cpu"]["resources"]
    assert "train_gpu" in types["train-cpu"]["resources"] and "train_gpu" in cloud["train-gpu"]["resources"]
    assert types["synth-cpu"]["min_workers"] == types["train-cpu"]["min_workers"] == 0
    assert local["provider"] == {**local["provider"], "type": "external",
                                 "module": "fdsl_local_provider.LocalFakeProvider"}
    assert (ROOT / "deploy" / "local" / "fdsl_local_provider.py").is_file()
