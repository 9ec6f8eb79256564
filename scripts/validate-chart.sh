#!/usr/bin/env bash
# Checks the Helm chart deploy/helm/kestrel offline, with no cluster:
#
#   1. helm lint --strict
#   2. helm template of the chart's shapes (defaults, two replicas, hostNetwork,
#      an LLM with an API key Secret, tls.existingSecret, a privileged agent)
#      for Kubernetes 1.20.2 (k8s-testenv's) and a current version, and what
#      each shape must hold (RBAC without Secrets, pods/exec or `*`, no role for
#      the agent, the PDB's API version, the API key only as a secretKeyRef, ...),
#      and the generated TLS material (PKCS#8 keys, the Service names, signed by the CA)
#   3. every rendered object against the Kubernetes OpenAPI schemas of both
#      versions (kubernetes-validate --strict; a kind the version does not
#      serve fails; only the CRD-defined kinds are skipped)
#   4. values of the wrong type fail `helm template` with the schema's message
#   5. deploy/samples/*.yaml against the CRDs' openAPIV3Schema (strict: unknown
#      fields fail, as kubectl's validation does); deploy/samples/invalid/*.yaml
#      must fail, at the field their `# expect-error:` line names
#   6. deploy/helm/kestrel/crds/ is byte-identical to deploy/crds/
#
# Prints PASS/FAIL per check and exits non-zero if any failed.
#
# Settings (environment):
#   HELM               helm binary (default: helm in `k8s-testenv bin-dir`)
#   K8S_TESTENV        the k8s-testenv tool (default: ../shared/tools/k8s-testenv
#                      beside the repository)
#   KESTREL_TOOLS_DIR  where the Python tools are installed (default
#                      /var/cache/kestrel/tools): a venv with kubernetes-validate
#                      (pinned: its last release with the 1.20 schemas), jsonschema
#                      and PyYAML, plus a newer kubernetes-validate for the
#                      current version. Installed from PyPI on first use.
#   KESTREL_K8S_CURRENT  the current Kubernetes version to check (default 1.31.0)
#   VERBOSE            non-empty: print the output of passing checks too
set -euo pipefail

start=$(date +%s.%N)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
chart="$root/deploy/helm/kestrel"
samples="$root/deploy/samples"

K8S_TESTENV=${K8S_TESTENV:-$(dirname "$0")/../../shared/tools/k8s-testenv}
tools=${KESTREL_TOOLS_DIR:-/var/cache/kestrel/tools}
venv="$tools/venv"
old_k8s=1.20.2                 # k8s-testenv's API server
cur_k8s=${KESTREL_K8S_CURRENT:-1.31.0}
kv_old=1.28.3                  # the last kubernetes-validate with the 1.20 schemas
kv_cur=1.31.0                  # kubernetes-validate for the current version
kv_cur_dir="$tools/kubernetes-validate-$kv_cur"

work=$(mktemp -d "${TMPDIR:-/tmp}/validate-chart.XXXXXX")
trap 'rm -rf "$work"' EXIT

failures=0
passes=0

# check NAME COMMAND...: runs COMMAND, prints PASS or FAIL (with its output).
check() {
    local name=$1
    shift
    local log="$work/log"
    if "$@" >"$log" 2>&1; then
        passes=$((passes + 1))
        printf 'PASS  %s\n' "$name"
        [ -z "${VERBOSE:-}" ] || sed -e 's/^/      /' "$log"
    else
        failures=$((failures + 1))
        printf 'FAIL  %s\n' "$name"
        sed -e 's/^/      /' "$log" | tail -n 40
    fi
}

die() {
    printf 'FAIL  %s\n' "$*"
    exit 1
}

# ---------------------------------------------------------------- tools
if [ -z "${HELM:-}" ]; then
    if [ -x "$K8S_TESTENV" ]; then
        HELM="$("$K8S_TESTENV" bin-dir)/helm"
        # helm comes with the tool's install (cached; minutes the first time)
        [ -x "$HELM" ] || [ "$(id -u)" != 0 ] || "$K8S_TESTENV" install >/dev/null
    elif command -v helm >/dev/null; then
        HELM=$(command -v helm)
    else
        die "no helm: set HELM, or K8S_TESTENV to the k8s-testenv tool (looked for $K8S_TESTENV)"
    fi
fi
[ -x "$HELM" ] || die "no helm at $HELM (run \`k8s-testenv install\`, or set HELM)"

ensure_python_tools() {
    if [ ! -x "$venv/bin/python" ]; then
        if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                echo "installing python3-venv (apt)" >&2
                apt-get install -y -q python3-venv >/dev/null 2>&1 ||
                    { apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null; }
            else
                die "python3 -m venv needs the python3-venv package (apt-get install python3-venv, as root)"
            fi
        fi
        mkdir -p "$tools"
        python3 -m venv "$venv"
    fi
    if ! "$venv/bin/python" - "$kv_old" >/dev/null 2>&1 <<'PY'
import sys, importlib.metadata as m
import jsonschema, yaml  # noqa: F401
sys.exit(m.version("kubernetes-validate") != sys.argv[1])
PY
    then
        echo "installing kubernetes-validate==$kv_old, jsonschema, PyYAML into $venv" >&2
        "$venv/bin/pip" install -q --disable-pip-version-check \
            "kubernetes-validate==$kv_old" jsonschema PyYAML >&2
    fi
    if [ ! -f "$kv_cur_dir/kubernetes_validate/__init__.py" ]; then
        echo "installing kubernetes-validate==$kv_cur into $kv_cur_dir" >&2
        rm -rf "$kv_cur_dir"
        "$venv/bin/pip" install -q --disable-pip-version-check --no-deps \
            --target "$kv_cur_dir" "kubernetes-validate==$kv_cur" >&2
    fi
}
ensure_python_tools || die "could not install the Python tools into $tools"
py="$venv/bin/python"

# ---------------------------------------------------------------- 1. lint
check "helm lint --strict" "$HELM" lint --strict "$chart"

# ---------------------------------------------------------------- 2. render
cat >"$work/llm.yaml" <<'YAML'
llm:
  endpoint: http://vllm.ai.svc:8000/v1
  model: qwen2.5-7b-instruct
  apiKeySecret:
    name: kestrel-llm
    key: api-key
config:
  learning: {window: 30m, minLearningTime: 1h, cleanWindows: 2, maxNewPerWindow: 0}
  scoring:
    alertThreshold: 55
    llm: {timeoutMs: 8000}
  alertFlood: {maxNewAlerts: 10, windowSecs: 600}
rules:
  shop.yaml: |
    rules:
      - id: shop-no-curl
        description: curl runs in the shop
        score: 70
        tags: [T1105]
        action: investigate
        when: {field: exe_name, equals: [curl]}
YAML

# shape name → helm arguments
shapes=(defaults replicas2 hostnetwork llm existing-secret privileged)
shape_args() {
    case $1 in
    defaults) echo "--include-crds" ;;
    replicas2) echo "--set operator.replicas=2 --set operator.podDisruptionBudget.enabled=true" ;;
    hostnetwork) echo "--set operator.hostNetwork=true --set agent.hostNetwork=true --set agent.operatorAddress=https://\$(HOST_IP):7443 --set agent.enrollAddress=https://\$(HOST_IP):7444" ;;
    llm) echo "-f $work/llm.yaml" ;;
    existing-secret) echo "--set tls.existingSecret=kestrel-certs --set tls.secretKeys.ca=ca.crt --set tls.secretKeys.cert=tls.crt --set tls.secretKeys.key=tls.key --set tls.secretKeys.caKey=ca.key" ;;
    privileged) echo "--set agent.privileged=true" ;;
    esac
}

render() {
    local shape=$1 kube=$2
    # shellcheck disable=SC2046
    "$HELM" template kestrel "$chart" --namespace kestrel-system --kube-version "$kube" \
        $(shape_args "$shape") >"$work/$shape-$kube.yaml"
}

# what every rendering must hold, and what each shape adds
cat >"$work/expect.py" <<'PY'
import sys, yaml

path, shape, kube = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
by = {}
for d in docs:
    by.setdefault(d["kind"], []).append(d)
errors = []

def want(cond, msg):
    if not cond:
        errors.append(msg)

def one(kind, name_suffix=""):
    objs = [d for d in by.get(kind, []) if d["metadata"]["name"].endswith(name_suffix)]
    want(len(objs) == 1, f"expected one {kind} *{name_suffix}, found {len(objs)}")
    return objs[0] if objs else {}

# RBAC: least privilege, nothing for the agent
for kind in ("ClusterRole", "Role"):
    for r in by.get(kind, []):
        for rule in r.get("rules", []):
            res, verbs = rule.get("resources", []), rule.get("verbs", [])
            groups = rule.get("apiGroups", [])
            want("*" not in res and "*" not in verbs and "*" not in groups,
                 f"{kind} {r['metadata']['name']}: a wildcard in {rule}")
            want(not ("" in groups and "secrets" in res), f"{kind}: Secrets are readable")
            want("pods/exec" not in res and "pods/attach" not in res, f"{kind}: pods/exec")
            if rule.get("resourceNames"):
                want("create" not in verbs, f"{kind}: create limited by resourceNames never matches")
for kind in ("ClusterRoleBinding", "RoleBinding"):
    for b in by.get(kind, []):
        for s in b.get("subjects", []):
            want(not s["name"].endswith("-agent"), f"{kind} {b['metadata']['name']} binds the agent")
agent_sa = one("ServiceAccount", "-agent")
want(agent_sa.get("automountServiceAccountToken") is False, "agent ServiceAccount mounts a token")

ds = one("DaemonSet", "-agent")
dep = one("Deployment", "-operator")
dspec = ds["spec"]["template"]["spec"]
ospec = dep["spec"]["template"]["spec"]
want(dspec.get("automountServiceAccountToken") is False, "agent pod mounts an API token")
want(dspec.get("hostPID") is True, "agent without hostPID")
tok = [v for v in dspec["volumes"] if "projected" in v]
want(len(tok) == 1 and tok[0]["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "kestrel",
     "agent: no projected token with audience kestrel")
ca = [v for v in dspec["volumes"] if v["name"] == "ca"]
want(len(ca) == 1 and [i["path"] for i in ca[0]["secret"]["items"]] == ["ca.pem"],
     "agent gets more of the TLS Secret than ca.pem")
actr = dspec["containers"][0]
asc = actr["securityContext"]
args = actr["args"]
want(args[0] == "run" and "--token-file" in args and "$(NODE_NAME)" in args, f"agent args: {args}")
want(asc.get("readOnlyRootFilesystem") is True and asc.get("runAsUser") == 0, "agent securityContext")
octr = ospec["containers"][0]
oargs = octr["args"]
want(octr["securityContext"].get("readOnlyRootFilesystem") is True, "operator root filesystem writable")
want(ospec["securityContext"].get("runAsUser") == 65532, "operator runs as root")
want(oargs[oargs.index("--agents") + 1] == "", "operator --agents is not ''")
want(oargs[oargs.index("--agent-service-account") + 1] == "kestrel-system/kestrel-agent", "agent SA flag")
names = oargs[oargs.index("--server-names") + 1].split(",")
want(names == ["kestrel-operator", "kestrel-operator.kestrel-system", "kestrel-operator.kestrel-system.svc",
               "kestrel-operator.kestrel-system.svc.cluster.local"], f"server names {names}")
want(oargs[oargs.index("--exclude-namespaces") + 1] == "kube-system,kestrel-system", "excluded namespaces")
tlsvol = [v for v in ospec["volumes"] if v["name"] == "tls"][0]["secret"]
want(sorted(i["path"] for i in tlsvol["items"]) == ["ca-key.pem", "ca.pem", "server-key.pem", "server.pem"],
     "operator TLS file names")
want(tlsvol.get("defaultMode") == 0o440, "operator TLS mode")
for cm in by.get("ConfigMap", []):
    want("sk-" not in yaml.safe_dump(cm) and "apiKey:" not in yaml.safe_dump(cm), "an API key in a ConfigMap")
cfg = yaml.safe_load(one("ConfigMap", "-config")["data"]["config.yaml"])

secrets = by.get("Secret", [])
if shape == "existing-secret":
    want(not secrets, "a TLS Secret is generated although tls.existingSecret is set")
    want(tlsvol["secretName"] == "kestrel-certs", "operator does not mount tls.existingSecret")
    want({i["key"]: i["path"] for i in tlsvol["items"]} ==
         {"ca.crt": "ca.pem", "ca.key": "ca-key.pem", "tls.crt": "server.pem", "tls.key": "server-key.pem"},
         "existingSecret keys not mapped to the file names")
    want(ca and ca[0]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.pem"}], "agent CA key mapping")
else:
    want(len(secrets) == 1 and sorted(secrets[0]["data"]) == ["ca-key.pem", "ca.pem", "server-key.pem", "server.pem"],
         "generated TLS Secret keys")
env = {e["name"]: e for e in octr["env"]}
if shape == "llm":
    want(cfg["scoring"]["llm"]["endpoint"] == "http://vllm.ai.svc:8000/v1", "LLM endpoint not in config.yaml")
    want(cfg["scoring"]["llm"]["apiKeyEnv"] == "KESTREL_LLM_API_KEY", "LLM apiKeyEnv")
    want(cfg["scoring"]["llm"]["timeoutMs"] == 8000 and cfg["scoring"]["alertThreshold"] == 55, "config merge")
    want(env.get("KESTREL_LLM_API_KEY", {}).get("valueFrom", {}).get("secretKeyRef") ==
         {"name": "kestrel-llm", "key": "api-key"}, "API key not from the Secret")
    want(cfg["rules"] == ["/etc/kestrel/config/shop.yaml"], f"rule files {cfg.get('rules')}")
    want("shop.yaml" in one("ConfigMap", "-config")["data"], "rule file not in the ConfigMap")
else:
    want("KESTREL_LLM_API_KEY" not in env, "API key env without an LLM")
    want(cfg == {}, f"default config.yaml is not empty: {cfg}")
pdbs = by.get("PodDisruptionBudget", [])
if shape == "replicas2":
    want(dep["spec"]["replicas"] == 2, "replicas")
    want(len(pdbs) == 1, "no PodDisruptionBudget with replicas 2")
    if pdbs:
        v = "policy/v1beta1" if kube.startswith("1.20") else "policy/v1"
        want(pdbs[0]["apiVersion"] == v, f"PDB {pdbs[0]['apiVersion']} on {kube}")
    want("podAntiAffinity" in ospec.get("affinity", {}), "no anti-affinity with replicas 2")
else:
    want(not pdbs, "a PodDisruptionBudget with one replica")
if shape == "hostnetwork":
    for s, who in ((ospec, "operator"), (dspec, "agent")):
        want(s.get("hostNetwork") is True and s.get("dnsPolicy") == "ClusterFirstWithHostNet", f"{who} hostNetwork")
    want(args[args.index("--operator") + 1] == "https://$(HOST_IP):7443", "agent operatorAddress")
else:
    want("hostNetwork" not in ospec and "hostNetwork" not in dspec, "hostNetwork by default")
    want(args[args.index("--operator") + 1] == "https://kestrel-operator.kestrel-system.svc:7443", "agent address")
if shape == "privileged":
    want(asc.get("privileged") is True and "capabilities" not in asc, "privileged agent")
else:
    want(asc.get("privileged") is False and "ALL" in asc["capabilities"]["drop"]
         and "BPF" in asc["capabilities"]["add"], "agent capabilities")
if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"{len(docs)} objects as expected")
PY

for kube in "$old_k8s" "$cur_k8s"; do
    for shape in "${shapes[@]}"; do
        check "render $shape (Kubernetes $kube)" render "$shape" "$kube"
        if [ -s "$work/$shape-$kube.yaml" ]; then
            check "contents $shape (Kubernetes $kube)" "$py" "$work/expect.py" "$work/$shape-$kube.yaml" "$shape" "$kube"
        fi
    done
done

# The generated TLS material: the operator loads the CA key with rcgen (ring),
# which reads PKCS#8 only (sprig's RSA and ECDSA keys are PKCS#1 / SEC1), and
# agents check the server certificate against <svc>.<ns>.svc.
generated_tls() {
    local f="$work/defaults-$old_k8s.yaml" d="$work/tls"
    mkdir -p "$d"
    "$py" - "$f" "$d" <<'PY'
import base64, sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc["kind"] == "Secret":
        for k, v in doc["data"].items():
            open(f"{sys.argv[2]}/{k}", "wb").write(base64.b64decode(v))
PY
    for k in ca-key.pem server-key.pem; do
        head -n 1 "$d/$k" | grep -qx -- '-----BEGIN PRIVATE KEY-----' || { echo "$k is not PKCS#8"; return 1; }
    done
    openssl verify -CAfile "$d/ca.pem" "$d/server.pem"
    openssl x509 -in "$d/ca.pem" -noout -text | grep -q 'CA:TRUE' || { echo "ca.pem is not a CA"; return 1; }
    local sans
    sans=$(openssl x509 -in "$d/server.pem" -noout -text | grep -A1 'Subject Alternative Name' | tail -n 1 | tr -d ' ')
    [ "$sans" = "DNS:kestrel-operator,DNS:kestrel-operator.kestrel-system,DNS:kestrel-operator.kestrel-system.svc,DNS:kestrel-operator.kestrel-system.svc.cluster.local" ] ||
        { echo "server certificate names: $sans"; return 1; }
}
if command -v openssl >/dev/null; then
    check "generated TLS Secret: PKCS#8 keys, server certificate signed by the CA for the Service names" generated_tls
else
    check "generated TLS Secret (needs openssl)" false
fi

# ---------------------------------------------------------------- 3. kubernetes-validate
cat >"$work/kv.py" <<'PY'
import sys, yaml, kubernetes_validate as kv
from kubernetes_validate.utils import VersionNotSupportedError

version, files = sys.argv[1], sys.argv[2:]
crd_groups = {"kestrel.dev"}   # kinds the CRDs define: unknown to kubernetes-validate
bad = checked = skipped = 0
for f in files:
    for d in yaml.safe_load_all(open(f)):
        if not d:
            continue
        what = f"{f.rsplit('/', 1)[-1]}: {d.get('apiVersion')} {d.get('kind')} {d.get('metadata', {}).get('name')}"
        if d.get("apiVersion", "").split("/")[0] in crd_groups:
            skipped += 1
            continue
        try:
            kv.validate(d, version, strict=True)
            checked += 1
        except kv.ValidationError as e:
            bad += 1
            print(f"{what}: {'.'.join(str(p) for p in e.path)}: {e.message}")
        except (kv.SchemaNotFoundError, VersionNotSupportedError, kv.InvalidSchemaError) as e:
            bad += 1
            print(f"{what}: not served by Kubernetes {version}: {e}")
print(f"{checked} objects valid for Kubernetes {version}, {skipped} custom resources skipped")
sys.exit(1 if bad or not checked else 0)
PY
old_files=() cur_files=()
for shape in "${shapes[@]}"; do
    [ -s "$work/$shape-$old_k8s.yaml" ] && old_files+=("$work/$shape-$old_k8s.yaml")
    [ -s "$work/$shape-$cur_k8s.yaml" ] && cur_files+=("$work/$shape-$cur_k8s.yaml")
done
check "kubernetes-validate --strict, Kubernetes $old_k8s (${#old_files[@]} renderings)" \
    "$py" "$work/kv.py" "$old_k8s" "${old_files[@]}"
check "kubernetes-validate --strict, Kubernetes $cur_k8s (${#cur_files[@]} renderings)" \
    env PYTHONPATH="$kv_cur_dir" "$py" "$work/kv.py" "$cur_k8s" "${cur_files[@]}"

# ---------------------------------------------------------------- 4. schema
# wrong_value EXPECTED-TEXT --set ARG: helm template must fail, with the schema's message
wrong_value() {
    local expected=$1
    shift
    local out
    if out=$("$HELM" template kestrel "$chart" "$@" 2>&1 >/dev/null); then
        echo "helm template $* succeeded"
        return 1
    fi
    if ! grep -q "values don't meet the specifications of the schema" <<<"$out" ||
        ! grep -qF -- "$expected" <<<"$out"; then
        echo "helm template $* failed, but not with the schema's message ($expected):"
        echo "$out"
        return 1
    fi
}
check "schema: operator.replicas=two" wrong_value "operator.replicas: Invalid type. Expected: integer" --set operator.replicas=two
check "schema: agent.capabilities=foo" wrong_value "agent.capabilities: Invalid type. Expected: array" --set agent.capabilities=foo
check "schema: agent.capabilities={CAP_BPF}" wrong_value "agent.capabilities.0" --set "agent.capabilities={CAP_BPF}"
check "schema: operator.replicas=0" wrong_value "operator.replicas: Must be greater than or equal to 1" --set operator.replicas=0
check "schema: unknown key operator.replica" wrong_value "Additional property replica is not allowed" --set operator.replica=2
check "schema: logFormat=xml" wrong_value "logFormat must be one of the following" --set logFormat=xml
check "schema: operator.ports.grpc=70000" wrong_value "operator.ports.grpc: Must be less than or equal to 65535" --set operator.ports.grpc=70000
check "schema: agent.tokenExpirationSeconds=60" wrong_value "agent.tokenExpirationSeconds: Must be greater than or equal to 600" --set agent.tokenExpirationSeconds=60
check "schema: agent.privileged=yes" wrong_value "agent.privileged: Invalid type. Expected: boolean" --set-string agent.privileged=yes
check "schema: config.mode=Sometimes" wrong_value "config.mode must be one of the following" --set config.mode=Sometimes
check "schema: config.learning.windw" wrong_value "Additional property windw is not allowed" --set config.learning.windw=1h
check "schema: llm.endpoint without scheme" wrong_value "llm.endpoint: Does not match pattern" --set llm.endpoint=vllm:8000
check "schema: operator.apiWritesPerSec=fast" wrong_value "operator.apiWritesPerSec: Does not match pattern" --set operator.apiWritesPerSec=fast
check "schema: a rule file named config.yaml" wrong_value "rules:" --set 'rules.config\.yaml=x'

# ---------------------------------------------------------------- 5. samples
cat >"$work/samples.py" <<'PY'
import glob, os, re, sys, yaml, jsonschema

crd_dir, samples = sys.argv[1], sys.argv[2]

def strict(s):
    """The CRD schema as JSON Schema: OpenAPI's nullable becomes a null type, and
    objects with properties refuse unknown fields (kubectl's validation does;
    the API server would silently drop them)."""
    if isinstance(s, dict):
        s = {k: strict(v) for k, v in s.items()}
        if s.pop("nullable", False) and "type" in s:
            s["type"] = [s["type"], "null"]
            if "enum" in s:
                s["enum"] = list(s["enum"]) + [None]
        if "properties" in s and "additionalProperties" not in s \
                and not s.get("x-kubernetes-preserve-unknown-fields"):
            s["additionalProperties"] = False
        return s
    if isinstance(s, list):
        return [strict(v) for v in s]
    return s

schemas = {}
for f in sorted(glob.glob(os.path.join(crd_dir, "*.yaml"))):
    crd = yaml.safe_load(open(f))
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    for v in crd["spec"]["versions"]:
        s = strict(v["schema"]["openAPIV3Schema"])
        s["properties"].update(apiVersion={"type": "string"}, kind={"type": "string"},
                               metadata={"type": "object"})
        schemas[(f"{group}/{v['name']}", kind)] = s

name_re = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

def errors(doc):
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in schemas:
        return [("apiVersion", f"no CRD serves {key}")]
    out = []
    meta = doc.get("metadata") or {}
    for field in ("name", "namespace"):   # both kinds are namespaced
        v = meta.get(field)
        if not isinstance(v, str) or not name_re.match(v) or len(v) > 253:
            out.append((f"metadata.{field}", f"missing or not a DNS-1123 name: {v!r}"))
    validator = jsonschema.Draft4Validator(schemas[key])
    for e in validator.iter_errors(doc):
        out.append((".".join(str(p) for p in e.absolute_path), e.message))
    return out

bad = 0
valid = sorted(glob.glob(os.path.join(samples, "*.yaml")))
invalid = sorted(glob.glob(os.path.join(samples, "invalid", "*.yaml")))
if not valid or not invalid:
    print(f"no samples: {len(valid)} valid, {len(invalid)} invalid")
    sys.exit(1)
for f in valid:
    for doc in yaml.safe_load_all(open(f)):
        if not doc:
            continue
        errs = errors(doc)
        if errs:
            bad += 1
            for path, msg in errs[:10]:
                print(f"{os.path.basename(f)}: {path}: {msg[:300]}")
        else:
            print(f"valid     {os.path.basename(f)} ({doc['kind']} {doc['metadata']['name']})")
for f in invalid:
    text = open(f).read()
    m = re.search(r"^# expect-error: (\S+)", text, re.M)
    docs = [d for d in yaml.safe_load_all(text) if d]
    errs = [e for d in docs for e in errors(d)]
    if not errs:
        bad += 1
        print(f"invalid/{os.path.basename(f)}: accepted, but it must be rejected")
    elif m and not any(p == m.group(1) for p, _ in errs):
        bad += 1
        print(f"invalid/{os.path.basename(f)}: rejected, but not at {m.group(1)}: {errs}")
    else:
        print(f"rejected  invalid/{os.path.basename(f)}: {errs[0][0]}: {errs[0][1][:120]}")
sys.exit(1 if bad else 0)
PY
check "samples against the CRD schemas (deploy/samples, deploy/samples/invalid)" \
    "$py" "$work/samples.py" "$root/deploy/crds" "$samples"

# ---------------------------------------------------------------- 6. CRDs
same_crds() {
    local ok=0 f
    for f in "$root"/deploy/crds/*.yaml; do
        cmp "$f" "$chart/crds/$(basename "$f")" || ok=1
    done
    for f in "$chart"/crds/*.yaml; do
        [ -e "$root/deploy/crds/$(basename "$f")" ] || { echo "$f is not in deploy/crds"; ok=1; }
    done
    return $ok
}
check "chart crds/ byte-identical to deploy/crds/" same_crds

elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
echo "$passes passed, $failures failed (${elapsed}s)"
[ "$failures" -eq 0 ]
