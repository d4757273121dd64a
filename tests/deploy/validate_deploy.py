#!/usr/bin/python3
"""validate_deploy.py - checks the deployment files that no machine here can run.

    /usr/bin/python3 tests/deploy/validate_deploy.py REPO_ROOT [--no-self-test] [--verbose]

No container engine or cluster runs on the build machine, so deploy/Dockerfile,
deploy/docker-compose.yml and deploy/k8s/ are checked by parsing them (Debian's
python3-yaml) against what the project itself says:

- every YAML file under deploy/ parses (all documents of it);
- the allowed settings come from `twin-engine --help-config` when the binary is
  built ($TWIN_BIN_DIR or REPO_ROOT/build/bin), else from the SETTINGS table in
  twin-engine/core/config.c; types, ranges and enums from that table; TWIN_*
  variable names map to settings exactly as tw_config_load_env() does;
- Dockerfile: every FROM is debian:bookworm*; the build stage installs the
  -dev package of every pkg_check_modules() of CMakeLists.txt and nothing
  deploy/local/install-deps.sh does not install, builds Release with Ninja;
  the runtime stage installs the runtime libraries (no -dev, no toolchain),
  copies twin-engine, twin-sim and twinctl from the build stage, runs as a
  non-root USER, EXPOSEs the port of TWIN_HTTP_LISTEN, has a HEALTHCHECK on
  /healthz with a tool that is in the image, ENTRYPOINT twin-engine, CMD run;
- compose: every service has an image or a build (whose Dockerfile exists),
  depends_on names services with valid conditions (a service_healthy target
  has a healthcheck, a service_completed_successfully target is a one-shot),
  no `$` that compose would substitute with nothing, the engine's TWIN_*
  names are settings, its MongoDB replica set is the one mongod runs, the
  topics it reads are created co-partitioned, twin-sim's options exist;
- k8s: each document has apiVersion, kind, metadata.name (and no namespace);
  kustomization.yaml lists exactly the manifests; the Deployment's probes
  are /healthz (liveness, startup) and /readyz (readiness) on the container
  port, the Service and PodDisruptionBudget selectors match the pod labels,
  secretKeyRefs name the Secret and keys it has, the config file comes from
  the ConfigMap, whose twin.yaml parses and holds only settings (kafka.*
  passthrough, alerts.*) and no secrets; non-root, read-only root file
  system, service links off (they would inject TWIN_* variables the engine
  refuses); Prometheus annotations on the HTTP port;
- with the binary, `twin-engine check-config` accepts the effective
  configuration of the compose engine and of the Kubernetes pod (its
  ConfigMap, its environment with the Secret's values, the image's ENV).

Then, unless --no-self-test, it breaks the files in memory in ~20 ways (a wrong
probe path, a typo in an env name, a missing binary, a root USER...) and fails
if any broken variant passes. Exit status: 0 all good, 1 problems (listed).
"""
import base64
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("validate_deploy: needs Debian's python3-yaml (apt-get install python3-yaml)")

# pkg-config module (CMakeLists.txt pkg_check_modules) -> Debian packages
# (build: the -dev package; runtime: the shared library package, bookworm).
DEV_PKG = {
    "rdkafka": "librdkafka-dev",
    "libmongoc-1.0": "libmongoc-dev",
    "libbson-1.0": "libbson-dev",
    "libprotobuf-c": "libprotobuf-c-dev",
    "yaml-0.1": "libyaml-dev",
    "libmicrohttpd": "libmicrohttpd-dev",
    "libzstd": "libzstd-dev",
    "jemalloc": "libjemalloc-dev",
    "cmocka": "libcmocka-dev",
}
RUNTIME_PKG = {
    "rdkafka": "librdkafka1",
    "libmongoc-1.0": "libmongoc-1.0-0",
    "libbson-1.0": "libbson-1.0-0",
    "libprotobuf-c": "libprotobuf-c1",
    "yaml-0.1": "libyaml-0-2",
    "libmicrohttpd": "libmicrohttpd12",
    "libzstd": "libzstd1",
    "jemalloc": "libjemalloc2",
}
PROGRAM_PKG = {"protoc-c": "protobuf-c-compiler"}  # find_program() in CMakeLists.txt
TOOLCHAIN = {"cmake", "ninja-build", "pkg-config"}
COMPILERS = {"build-essential", "gcc"}
NOT_IN_RUNTIME = {"build-essential", "gcc", "cmake", "ninja-build", "pkg-config", "make", "clang"}
PROGRAMS = ("twin-engine", "twin-sim", "twinctl")
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


# ---- files -----------------------------------------------------------------------


class Tree:
    """The repository's files, with in-memory replacements (for the self-test)."""

    def __init__(self, root, overrides=None):
        self.root = root
        self.overrides = dict(overrides or {})

    def path(self, rel):
        return os.path.join(self.root, rel)

    def exists(self, rel):
        return rel in self.overrides or os.path.exists(self.path(rel))

    def read(self, rel):
        if rel in self.overrides:
            return self.overrides[rel]
        with open(self.path(rel), encoding="utf-8") as f:
            return f.read()

    def yaml_files(self, top="deploy"):
        out = []
        for d, dirs, files in os.walk(self.path(top)):
            dirs[:] = sorted(x for x in dirs if not x.startswith("."))
            for f in sorted(files):
                if f.endswith((".yml", ".yaml")):
                    out.append(os.path.relpath(os.path.join(d, f), self.root))
        return out


class Report:
    def __init__(self):
        self.errors = []
        self.checks = 0

    def check(self, ok, where, msg):
        self.checks += 1
        if not ok:
            self.errors.append(f"{where}: {msg}")
        return ok

    def fail(self, where, msg):
        return self.check(False, where, msg)


# ---- what the engine accepts -------------------------------------------------------


class Settings:
    """Setting keys, their types, and the TWIN_* names tw_config_load_env() ignores."""

    def __init__(self, tree, rep, binary):
        self.keys, self.types, self.defaults, self.ignored_env = set(), {}, {}, set()
        src = "twin-engine/core/config.c"
        text = tree.read(src) if tree.exists(src) else ""
        row = re.compile(
            r'\{"([a-z0-9_.]+)",\s*T_(STR|INT|ENUM|OPT),\s*F\(\w+\),\s*(NULL|"[^"]*"),\s*'
            r'(-?\w+),\s*(-?\w+),\s*(NULL|"[^"]*")')
        for m in row.finditer(text):
            key, typ, dflt, lo, hi, allowed = m.groups()
            self.types[key] = (typ, _int_or_none(lo), _int_or_none(hi),
                               allowed.strip('"').split("|") if allowed != "NULL" else None)
            self.defaults[key] = dflt.strip('"') if dflt != "NULL" else None
        ign = re.search(r"static const char \*ignored\[\]\s*=\s*\{(.*?)\};", text, re.S)
        if ign:
            self.ignored_env = set(re.findall(r'"([a-z0-9_]+)"', ign.group(1)))
        self.source = src
        if binary:
            rc, text_out = run_cached([binary, "--help-config"])
            keys = _help_config_keys(text_out)
            if rc == 0 and keys:
                self.keys, self.source = keys, f"{binary} --help-config"
            else:
                rep.fail(binary, f"--help-config failed (exit {rc}) or listed no settings")
        if not self.keys:
            self.keys = set(self.types)
        rep.check(len(self.keys) >= 10, self.source, f"found only {len(self.keys)} settings: parser out of date?")
        rep.check("config" in self.ignored_env, src, "the list of ignored TWIN_* variables was not found")

    def classify(self, key):
        """None if key is accepted by the config loader, else why not."""
        if key.startswith("kafka."):
            return None if len(key) > 6 else "'kafka.' names no librdkafka property"
        if key in self.keys:
            return None
        return "is not a setting (twin-engine --help-config lists them; librdkafka properties take kafka.)"

    def env_key(self, name):
        """(setting key or None, problem or None) for an environment variable name."""
        if not name.startswith("TWIN_"):
            return None, None
        n = name[5:].lower()
        if n == "config":
            return None, None  # the config file path
        if n in self.ignored_env or n.startswith("test_"):
            return None, "is ignored by the engine (a variable of the local stack or the tests), not a setting"
        if n.startswith("kafka_") and len(n) > 6:
            return "kafka." + n[6:].replace("_", "."), None
        for k in self.keys:
            if k.replace(".", "_") == n:
                return k, None
        return None, "names no setting: the engine refuses to start (twin-engine --help-config)"

    def check_value(self, key, value):
        t = self.types.get(key)
        if not t:
            return None
        typ, lo, hi, allowed = t
        if typ == "INT":
            if not re.fullmatch(r"-?[0-9]+", value) or not lo <= int(value) <= hi:
                return f"{key} = '{value}': expected an integer from {lo} to {hi}"
        elif typ == "ENUM" and value not in allowed:
            return f"{key} = '{value}': expected one of {'|'.join(allowed)}"
        elif typ == "STR" and not value:
            return f"{key} is empty"
        return None


def _int_or_none(s):
    try:
        return int(s)
    except ValueError:
        return {"TW_SEQ_WINDOW_MAX": 65536}.get(s)


def _help_config_keys(text):
    """Setting keys of `twin-engine --help-config`: the block after the header."""
    keys, block = set(), 0
    for line in text.splitlines():
        if not line.strip():
            block += 1
            if block >= 2:
                break
            continue
        m = re.match(r"^  ([a-z][a-z0-9_.]*[a-z0-9])\s", line)
        if block == 1 and m and m.group(1) != "kafka":
            keys.add(m.group(1))
    return keys


_RUN_CACHE = {}


def run_cached(cmd):
    """(returncode, stdout) of a command whose output does not depend on the files checked."""
    key = tuple(cmd)
    if key not in _RUN_CACHE:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        _RUN_CACHE[key] = (out.returncode, out.stdout)
    return _RUN_CACHE[key]


def find_binary(tree, name):
    for d in (os.environ.get("TWIN_BIN_DIR"), tree.path("build/bin")):
        if d and os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def check_config_run(binary, env, args, files, where, rep):
    """Runs `twin-engine check-config ARGS` with exactly ENV (plus PATH); FILES maps a
    path named in ARGS to the text to put there."""
    with tempfile.TemporaryDirectory() as tmp:
        real = []
        mapping = {}
        for path, text in files.items():
            p = os.path.join(tmp, os.path.basename(path))
            with open(p, "w", encoding="utf-8") as f:
                f.write(text)
            mapping[path] = p
        for a in args:
            real.append(mapping.get(a, a))
        e = {"PATH": "/usr/bin:/bin"}
        e.update({k: str(v) for k, v in env.items()})
        if "TWIN_CONFIG" in e:
            e["TWIN_CONFIG"] = mapping.get(e["TWIN_CONFIG"], e["TWIN_CONFIG"])
        out = subprocess.run([binary, "check-config"] + real, env=e, capture_output=True, text=True, timeout=20)
    rep.check(out.returncode == 0, where,
              f"twin-engine check-config rejects the effective configuration: {out.stderr.strip()}")
    dump = {}
    for line in out.stdout.splitlines():
        k, _, v = line.partition("=")
        dump[k] = v
    return dump


# ---- YAML helpers ------------------------------------------------------------------


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when python3-yaml has it


def load_yaml_docs(tree, rel, rep):
    try:
        docs = [d for d in yaml.load_all(tree.read(rel), Loader=_LOADER) if d is not None]
    except yaml.YAMLError as e:
        rep.fail(rel, f"YAML does not parse: {e}")
        return None
    rep.check(bool(docs), rel, "holds no YAML document")
    return docs


def flatten_engine_yaml(text, where, rep, settings):
    """Flattens a twin-engine config file the way tw_config_load_yaml() does, from the
    raw scalars (so 'yes' stays 'yes'). Returns {key: value} or None."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        rep.fail(where, f"does not parse as YAML: {e}")
        return None
    if any(isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None) for ev in yaml.parse(text)):
        rep.fail(where, "uses a YAML anchor or alias: the engine does not support them")
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        rep.fail(where, "expected a mapping of settings at the top")
        return None
    out = {}

    def walk(n, prefix):
        for k, v in n.value:
            key = f"{prefix}.{k.value}" if prefix else k.value
            if isinstance(v, yaml.MappingNode):
                walk(v, key)
            elif isinstance(v, yaml.SequenceNode):
                if key != "alerts.rules":
                    rep.fail(where, f"{key}: lists are not allowed here (only alerts.rules is a list)")
                    continue
                rule_keys = {"id", "severity", "condition", "clear", "message", "clear_message", "limit", "enabled"}
                for item in v.value:
                    if not isinstance(item, yaml.MappingNode):
                        rep.fail(where, "alerts.rules: each rule is a mapping")
                        continue
                    for rk, rv in item.value:
                        rep.check(rk.value in rule_keys, where, f"alerts.rules: unknown rule key '{rk.value}'")
                        rep.check(isinstance(rv, yaml.ScalarNode), where, f"alerts.rules: {rk.value} must be text")
                out[key] = [dict((rk.value, getattr(rv, "value", None)) for rk, rv in i.value)
                            for i in v.value if isinstance(i, yaml.MappingNode)]
            else:
                out[key] = v.value

    walk(node, "")
    for key, value in out.items():
        if key == "alerts.rules":
            continue
        why = settings.classify(key)
        if why:
            rep.fail(where, f"{key} {why}")
            continue
        bad = settings.check_value(key, value)
        rep.check(bad is None, where, bad or "")
    return out


def secret_like(key):
    return any(s in key for s in ("password", "secret", "token", "sasl.oauthbearer.config", "key.pem")) \
        and not key.endswith(".file")


def listen_port(listen):
    m = re.fullmatch(r"(.+):([0-9]{1,5})", listen or "")
    return int(m.group(2)) if m else None


# ---- Dockerfile --------------------------------------------------------------------


def parse_dockerfile(text):
    """[(instruction, arguments)] with continuation lines joined and comments dropped."""
    out, cur = [], None
    for raw in text.splitlines():
        s = raw.strip()
        if s.startswith("#") or (cur is None and not s):
            continue
        cont = raw.rstrip().endswith("\\")
        piece = raw.rstrip()[:-1] if cont else raw
        cur = piece if cur is None else cur + " " + piece.strip()
        if not cont:
            ins, _, rest = cur.strip().partition(" ")
            out.append((ins.upper(), rest.strip()))
            cur = None
    if cur is not None:
        ins, _, rest = cur.strip().partition(" ")
        out.append((ins.upper(), rest.strip()))
    return out


def exec_form(arg):
    if arg.startswith("["):
        try:
            v = json.loads(arg)
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return v
        except ValueError:
            pass
    return None


def apt_packages(run):
    pkgs = []
    for seg in re.split(r"&&|\|\||;|\n", run):
        toks = seg.split()
        for i, t in enumerate(toks):
            if t in ("apt-get", "apt") and "install" in toks[i + 1:]:
                j = toks.index("install", i + 1)
                pkgs += [p for p in toks[j + 1:] if not p.startswith("-")]
                break
    return pkgs


def cmake_requirements(tree):
    text = tree.read("CMakeLists.txt")
    mods = []
    for m in re.finditer(r"pkg_check_modules\(\s*\w+\s+([^)]*)\)", text):
        for tok in m.group(1).split():
            if tok in ("REQUIRED", "QUIET", "IMPORTED_TARGET", "GLOBAL", "NO_CMAKE_PATH",
                       "NO_CMAKE_ENVIRONMENT_PATH"):
                continue
            mods.append(re.split(r"[<>=]", tok)[0])
    progs = re.findall(r"find_program\(\s*\w+\s+([\w.-]+)", text)
    return mods, progs


def install_deps_packages(tree):
    text = tree.read("deploy/local/install-deps.sh")
    m = re.search(r"^PACKAGES=\((.*?)^\)", text, re.S | re.M)
    if not m:
        return set()
    body = "\n".join(line.split("#", 1)[0] for line in m.group(1).splitlines())
    return set(body.split())


def check_dockerfile(tree, rep, settings):
    rel = "deploy/Dockerfile"
    info = {"env": {}, "healthcheck": None, "expose": set(), "user": None, "ok": False}
    if not rep.check(tree.exists(rel), rel, "missing"):
        return info
    instr = parse_dockerfile(tree.read(rel))
    stages, stage = [], None
    for ins, arg in instr:
        if ins == "FROM":
            toks = [t for t in arg.split() if not t.startswith("--")]
            image = toks[0] if toks else ""
            name = toks[2] if len(toks) >= 3 and toks[1].upper() == "AS" else str(len(stages))
            stage = {"name": name, "image": image, "instr": []}
            stages.append(stage)
            known = {s["name"] for s in stages[:-1]}
            rep.check(image.startswith("debian:bookworm") or image in known, rel,
                      f"FROM {image}: expected debian:bookworm-slim (Debian 12, the build machine's release)")
        elif stage is None:
            rep.check(ins == "ARG", rel, f"{ins} before the first FROM")
        else:
            stage["instr"].append((ins, arg))
    if not rep.check(len(stages) >= 2, rel, "expected a multi-stage build (build, then runtime)"):
        return info
    final = stages[-1]
    copies = [(a, exec_form(a)) for i, a in final["instr"] if i == "COPY"]
    from_names = set()
    copied = set()
    for arg, _ in copies:
        toks = shlex.split(arg)
        frm = [t[7:] for t in toks if t.startswith("--from=")]
        paths = [t for t in toks if not t.startswith("--")]
        if frm:
            from_names.add(frm[0])
            copied |= {os.path.basename(p.rstrip("/")) for p in paths[:-1]}
    build = next((s for s in stages[:-1] if s["name"] in from_names), None)
    for p in PROGRAMS:
        rep.check(p in copied, rel, f"the runtime stage does not copy {p} from the build stage")
    if rep.check(build is not None, rel, "the runtime stage copies nothing from a build stage"):
        runs = " && ".join(a for i, a in build["instr"] if i == "RUN")
        pk = apt_packages(runs)
        mods, progs = cmake_requirements(tree)
        need = set(TOOLCHAIN)
        for mod in mods:
            if rep.check(mod in DEV_PKG and mod in RUNTIME_PKG, "CMakeLists.txt",
                         f"pkg_check_modules({mod}): add its Debian packages to DEV_PKG/RUNTIME_PKG in "
                         f"tests/deploy/validate_deploy.py, and to deploy/Dockerfile"):
                need.add(DEV_PKG[mod])
        for prog in progs:
            if rep.check(prog in PROGRAM_PKG, "CMakeLists.txt", f"find_program({prog}): map it in PROGRAM_PKG"):
                need.add(PROGRAM_PKG[prog])
        for p in sorted(need):
            rep.check(p in pk, rel, f"build stage: {p} is not installed (CMakeLists.txt needs it)")
        rep.check(bool(COMPILERS & set(pk)), rel, "build stage: no C compiler (build-essential)")
        allowed = install_deps_packages(tree)
        rep.check(bool(allowed), "deploy/local/install-deps.sh", "PACKAGES=( ... ) not found")
        for p in pk:
            rep.check(p in allowed, rel, f"build stage installs {p}, which deploy/local/install-deps.sh does not")
        rep.check(re.search(r"-G\s*Ninja", runs) is not None, rel, "build stage: not built with Ninja (-G Ninja)")
        rep.check("-DCMAKE_BUILD_TYPE=Release" in runs, rel, "build stage: not a Release build")
        rep.check("-DBUILD_TESTING=OFF" in runs, rel,
                  "build stage: -DBUILD_TESTING=OFF missing (the tests need cmocka, not installed there)")
        bindir = {os.path.dirname(t) for arg, _ in copies for t in shlex.split(arg) if t.endswith(PROGRAMS)}
        rep.check(all(d.endswith("/bin") for d in bindir), rel, f"the programs are copied from {bindir}, not .../bin")
    fpk = apt_packages(" && ".join(a for i, a in final["instr"] if i == "RUN"))
    mods, _ = cmake_requirements(tree)
    for mod in mods:
        if mod in RUNTIME_PKG and mod != "cmocka":
            rep.check(RUNTIME_PKG[mod] in fpk, rel, f"runtime stage: {RUNTIME_PKG[mod]} is not installed")
    rep.check("ca-certificates" in fpk, rel, "runtime stage: ca-certificates (TLS to Kafka/MongoDB) not installed")
    for p in fpk:
        rep.check(not p.endswith("-dev") and p not in NOT_IN_RUNTIME, rel,
                  f"runtime stage installs {p}: build tools stay in the build stage")
    users = [a for i, a in final["instr"] if i == "USER"]
    user = users[-1].split(":")[0] if users else "root"
    info["user"] = user
    created = " ".join(a for i, a in final["instr"] if i == "RUN")
    rep.check(user not in ("root", "0") and (user.isdigit() or re.search(r"useradd\b.*\b" + re.escape(user) + r"\b",
                                                                        created)), rel,
              f"the runtime stage must run as a non-root USER created in it (USER is {user})")
    for i, a in final["instr"]:
        if i == "ENV":
            for k, v in _env_pairs(a):
                info["env"][k] = v
                key, why = settings.env_key(k)
                rep.check(why is None, rel, f"ENV {k} {why}")
        elif i == "EXPOSE":
            info["expose"] |= {int(p.split("/")[0]) for p in a.split() if p.split("/")[0].isdigit()}
        elif i == "HEALTHCHECK":
            info["healthcheck"] = a
    listen = info["env"].get("TWIN_HTTP_LISTEN")
    rep.check(listen is not None and not listen.startswith(("127.", "localhost", "[::1]")), rel,
              "ENV TWIN_HTTP_LISTEN=0.0.0.0:8080 missing: probes cannot reach a loopback listener")
    port = listen_port(listen)
    rep.check(port in info["expose"], rel, f"EXPOSE {port} (the port of TWIN_HTTP_LISTEN) missing")
    hc = info["healthcheck"] or ""
    rep.check("/healthz" in hc and "NONE" not in hc.split(), rel, "HEALTHCHECK on /healthz missing")
    cmd = hc.split(" CMD ", 1)[1].strip() if " CMD " in f" {hc}" else ""
    ef = exec_form(cmd)
    tool = (ef[0] if ef else cmd.split()[0] if cmd.split() else "")
    if tool in ("curl", "wget"):
        rep.check(tool in fpk, rel, f"HEALTHCHECK uses {tool}, which the runtime stage does not install")
    else:
        rep.check(tool in ("bash", "/bin/bash", "sh", "/bin/sh") + PROGRAMS, rel,
                  f"HEALTHCHECK uses {tool!r}: not known to be in the image")
    if ef and tool.endswith("bash") and "/dev/tcp" in " ".join(ef):
        rep.check("${TWIN_HTTP_LISTEN" in " ".join(ef) or str(port) in " ".join(ef), rel,
                  "HEALTHCHECK does not connect to the http.listen port")
    ep = [exec_form(a) for i, a in final["instr"] if i == "ENTRYPOINT"]
    cm = [exec_form(a) for i, a in final["instr"] if i == "CMD"]
    rep.check(bool(ep) and ep[-1] == ["twin-engine"], rel, 'ENTRYPOINT ["twin-engine"] missing (exec form)')
    rep.check(bool(cm) and cm[-1] == ["run"], rel, 'CMD ["run"] missing (exec form)')
    info["ok"] = True
    return info


def _env_pairs(arg):
    if "=" not in arg.split()[0]:
        k, _, v = arg.partition(" ")
        return [(k, v.strip())]
    return [tuple(t.split("=", 1)) for t in shlex.split(arg)]


# ---- compose -----------------------------------------------------------------------


def _compose_dollars(value, where, rep):
    if isinstance(value, dict):
        for k, v in value.items():
            _compose_dollars(v, f"{where}.{k}", rep)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _compose_dollars(v, f"{where}[{i}]", rep)
    elif isinstance(value, str):
        i = 0
        while i < len(value):
            if value[i] != "$":
                i += 1
                continue
            if value[i + 1:i + 2] == "$":
                i += 2
                continue
            m = re.match(r"\$(\{([A-Za-z_]\w*)((:?[-?+])[^}]*)?\}|[A-Za-z_]\w*)", value[i:])
            if m and m.group(3):
                i += m.end()
                continue
            name = (m.group(2) or m.group(1)) if m else value[i:i + 10]
            rep.fail(where, f"'${name}': compose interpolates it (with nothing when unset); write $$ for a "
                            f"literal $, or ${{NAME:-default}}")
            i += m.end() if m else 1


def _as_list(cmd):
    if cmd is None:
        return []
    if isinstance(cmd, str):
        return shlex.split(cmd)
    return [str(c) for c in cmd]


def _env_dict(env):
    if env is None:
        return {}
    if isinstance(env, dict):
        return env
    out = {}
    for item in env:
        k, _, v = str(item).partition("=")
        out[k] = v
    return out


def sim_options(tree):
    """{option name: takes a value} from twin-sim's option table."""
    binary = find_binary(tree, "twin-sim")
    opts = {}
    if binary:
        out = run_cached([binary, "--help"])[1]
        for m in re.finditer(r"^  --([a-z][a-z0-9-]*)( [A-Za-z_.=|]+)?\s", out, re.M):
            opts[m.group(1)] = bool(m.group(2))
    if not opts and tree.exists("twin-engine/sim/main.c"):
        text = tree.read("twin-engine/sim/main.c")
        for m in re.finditer(r'\[O_\w+\]\s*=\s*\{\s*"([a-z-]+)",\s*(NULL|")', text):
            opts[m.group(1)] = m.group(2) != "NULL"
    return opts


def check_compose(tree, rep, settings, dinfo, engine_bin):
    rel = "deploy/docker-compose.yml"
    if not rep.check(tree.exists(rel), rel, "missing"):
        return
    docs = load_yaml_docs(tree, rel, rep)
    if not docs:
        return
    doc = docs[0]
    services = doc.get("services") if isinstance(doc, dict) else None
    if not rep.check(isinstance(services, dict) and services, rel, "no services"):
        return
    _compose_dollars(doc, rel, rep)
    ours = set()  # services running the image of deploy/Dockerfile
    for name, s in services.items():
        where = f"{rel}: services.{name}"
        if not rep.check(isinstance(s, dict), where, "not a mapping"):
            continue
        b = s.get("build")
        rep.check("image" in s or b is not None, where, "has neither image nor build")
        if b is not None:
            ctx = b if isinstance(b, str) else b.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(b, str) else b.get("dockerfile", "Dockerfile")
            ctx_rel = os.path.normpath(os.path.join(os.path.dirname(rel), ctx))
            df_rel = os.path.normpath(os.path.join(ctx_rel, dockerfile))
            rep.check(tree.exists(df_rel), where, f"build: {df_rel} does not exist")
            if df_rel == "deploy/Dockerfile":
                ours.add(name)
                rep.check(ctx_rel == ".", where, "build context must be the repository root (COPY . needs it)")
    images = {services[n].get("image") for n in ours} - {None}
    ours |= {n for n, s in services.items() if isinstance(s, dict) and s.get("image") in images}
    for name, s in services.items():
        if not isinstance(s, dict):
            continue
        where = f"{rel}: services.{name}"
        dep = s.get("depends_on") or {}
        dep = {d: {"condition": "service_started"} for d in dep} if isinstance(dep, list) else dep
        for target, spec in dep.items():
            if not rep.check(target in services, where, f"depends_on {target}: no such service"):
                continue
            cond = (spec or {}).get("condition", "service_started")
            rep.check(cond in DEPENDS_CONDITIONS, where, f"depends_on {target}: unknown condition {cond}")
            t = services[target] or {}
            hc = t.get("healthcheck") or {}
            if cond == "service_healthy":
                has = (hc.get("test") and not hc.get("disable")) or (target in ours and dinfo.get("healthcheck"))
                rep.check(bool(has), where, f"depends_on {target}: service_healthy, but it has no healthcheck")
            if cond == "service_completed_successfully":
                rep.check(str(t.get("restart", "no")) in ("no", "False", "false"), where,
                          f"depends_on {target}: a one-shot must not restart (restart: \"no\")")
            if not s.get("profiles"):
                rep.check(not t.get("profiles"), where, f"depends_on {target}, which only runs in a profile")
        hc = s.get("healthcheck")
        if isinstance(hc, dict) and "test" in hc:
            test = hc["test"]
            rep.check(isinstance(test, str) or (isinstance(test, list) and test and
                                                test[0] in ("CMD", "CMD-SHELL", "NONE")), where,
                      "healthcheck.test: a string or a list starting with CMD, CMD-SHELL or NONE")
        env = _env_dict(s.get("environment"))
        for k, v in env.items():
            rep.check(v is None or isinstance(v, (str, int, float)) and not isinstance(v, bool), where,
                      f"environment {k}: quote booleans (\"true\")")
            if name in ours:
                _, why = settings.env_key(k)
                rep.check(why is None, where, f"environment {k} {why}")
    engines = [n for n in ours if _as_list(services[n].get("entrypoint")) in ([], ["twin-engine"])]
    sims = [n for n in ours if _as_list(services[n].get("entrypoint"))[:1] == ["twin-sim"]]
    if not rep.check(len(engines) >= 1, rel, "no service runs twin-engine from deploy/Dockerfile"):
        return
    e = services[engines[0]]
    where = f"{rel}: services.{engines[0]}"
    env = {k: ("" if v is None else str(v)) for k, v in _env_dict(e.get("environment")).items()}
    eff = dict(dinfo.get("env", {}))
    eff.update(env)
    for need in ("TWIN_KAFKA_BOOTSTRAP_SERVERS", "TWIN_MONGO_URI"):
        rep.check(need in env, where, f"environment {need} missing")
    uri = env.get("TWIN_MONGO_URI", "")
    rs = re.search(r"[?&]replicaSet=([^&]+)", uri)
    mongods = [n for n, s in services.items() if isinstance(s, dict) and str(s.get("image", "")).startswith("mongo:")]
    rep.check(bool(mongods), rel, "no MongoDB service (image mongo:7)")
    for n in mongods:
        rep.check(str(services[n]["image"]).startswith("mongo:7"), rel, f"services.{n}: expected image mongo:7")
    if rs:
        runs_rs = any(rs.group(1) in _as_list(services[n].get("command")) for n in mongods)
        rep.check(runs_rs, where, f"TWIN_MONGO_URI names replicaSet={rs.group(1)}, but no mongod runs --replSet "
                                  f"{rs.group(1)}")
        initiated = any("rs.initiate" in " ".join(_as_list(s.get("command")) + _as_list(s.get("entrypoint")) +
                                                  _as_list((s.get("healthcheck") or {}).get("test")))
                        for s in services.values() if isinstance(s, dict))
        rep.check(initiated, rel, "nothing runs rs.initiate: the replica set never gets a primary")
    brokers = [n for n, s in services.items() if isinstance(s, dict)
               and str(s.get("image", "")).startswith("apache/kafka:")
               and _env_dict(s.get("environment")).get("KAFKA_PROCESS_ROLES")]
    rep.check(bool(brokers), rel, "no Kafka broker service (apache/kafka with KAFKA_PROCESS_ROLES)")
    for n in brokers:
        img = str(services[n]["image"])
        roles = str(_env_dict(services[n].get("environment")).get("KAFKA_PROCESS_ROLES", ""))
        rep.check(img.startswith("apache/kafka:4.1."), rel, f"services.{n}: expected apache/kafka:4.1.x, not {img}")
        rep.check("broker" in roles and "controller" in roles, rel,
                  f"services.{n}: KAFKA_PROCESS_ROLES must be broker,controller (KRaft, one node)")
    names = set(brokers) | {services[n].get("hostname") for n in brokers}
    host = env.get("TWIN_KAFKA_BOOTSTRAP_SERVERS", "")
    rep.check(bool(host) and all(h.strip().rsplit(":", 1)[0] in names for h in host.split(",")), where,
              f"TWIN_KAFKA_BOOTSTRAP_SERVERS={host} does not point at the broker service ({', '.join(brokers)})")
    # Topics: created, co-partitioned.
    created = {}
    for n, s in services.items():
        if not isinstance(s, dict):
            continue
        script = "\n".join(_as_list(s.get("entrypoint")) + [str(c) for c in (s.get("command") or [])]) \
            if not isinstance(s.get("command"), str) else s["command"]
        for line in script.splitlines():
            if "kafka-topics" in line and "--create" in line:
                t = re.search(r"--topic[ =](\S+)", line)
                p = re.search(r"--partitions[ =](\d+)", line)
                if t and p:
                    created[t.group(1)] = int(p.group(1))
    topics = {k: eff.get("TWIN_TOPICS_" + k.upper(), settings.defaults.get(f"topics.{k}", f"twin.{k}"))
              for k in ("telemetry", "lifecycle", "alerts", "dlq")}
    for k, t in topics.items():
        rep.check(t in created, rel, f"topic {t} (topics.{k}) is not created: auto-creation is off")
    if topics["telemetry"] in created and topics["lifecycle"] in created:
        rep.check(created[topics["telemetry"]] == created[topics["lifecycle"]], rel,
                  f"{topics['telemetry']} has {created[topics['telemetry']]} partitions, {topics['lifecycle']} "
                  f"{created[topics['lifecycle']]}: the input topics must be co-partitioned")
    # HTTP port published, graceful stop.
    port = listen_port(eff.get("TWIN_HTTP_LISTEN", settings.defaults.get("http.listen")))
    published = [str(p).rsplit(":", 1)[-1].split("/")[0] for p in e.get("ports", [])]
    rep.check(str(port) in published, where, f"ports: the HTTP port {port} (http.listen) is not published")
    hc_test = " ".join(_as_list((e.get("healthcheck") or {}).get("test")))
    if "/dev/tcp/" in hc_test:
        rep.check(f"/dev/tcp/127.0.0.1/{port} " in hc_test, where, f"healthcheck does not connect to port {port}")
    grace = str(e.get("stop_grace_period", "10s"))
    secs = int(re.sub(r"\D", "", grace) or 0) * (60 if grace.endswith("m") else 1)
    rep.check(secs >= 30, where, "stop_grace_period under 30s: SIGTERM's final flush may be cut short")
    if engine_bin:
        args = [a for a in _as_list(e.get("command")) or ["run"] if a not in ("run",)]
        check_config_run(engine_bin, eff, args, {}, where, rep)
    # twin-sim
    opts = sim_options(tree)
    for n in sims:
        s = services[n]
        args = _as_list(s.get("entrypoint"))[1:] + _as_list(s.get("command"))
        w = f"{rel}: services.{n}"
        i = 0
        while i < len(args):
            a = args[i]
            if a.startswith("--"):
                name, eq, _ = a[2:].partition("=")
                if rep.check(name in opts, w, f"twin-sim has no option --{name}"):
                    if opts[name] and not eq:
                        rep.check(i + 1 < len(args), w, f"--{name} needs a value")
                        if name == "brokers" and i + 1 < len(args):
                            rep.check(args[i + 1] == env.get("TWIN_KAFKA_BOOTSTRAP_SERVERS"), w,
                                      f"--brokers {args[i + 1]} differs from the engine's "
                                      "TWIN_KAFKA_BOOTSTRAP_SERVERS")
                        i += 1
            i += 1
        rep.check("--brokers" in args, w, "twin-sim without --brokers produces to 127.0.0.1:9092 (the container)")
        rep.check((s.get("healthcheck") or {}).get("disable") is True, w,
                  "healthcheck.disable: true missing (the image's HEALTHCHECK is the engine's)")


# ---- Kubernetes --------------------------------------------------------------------


def check_k8s(tree, rep, settings, dinfo, engine_bin):
    base = "deploy/k8s"
    kust_rel = f"{base}/kustomization.yaml"
    files = [f for f in tree.yaml_files(base)]
    manifests = [f for f in files if os.path.basename(f) != "kustomization.yaml"]
    if not rep.check(tree.exists(kust_rel), kust_rel, "missing"):
        return
    kdocs = load_yaml_docs(tree, kust_rel, rep) or [{}]
    kust = kdocs[0] if isinstance(kdocs[0], dict) else {}
    listed = [os.path.normpath(os.path.join(base, r)) for r in kust.get("resources", [])]
    for r in listed:
        rep.check(tree.exists(r), kust_rel, f"resources: {r} does not exist")
    for m in manifests:
        rep.check(m in listed, kust_rel, f"resources: {m} is not listed")
    rep.check("namespace" not in kust, kust_rel, "sets a namespace: the manifests are namespace-agnostic")
    objs = []
    for f in manifests:
        for d in load_yaml_docs(tree, f, rep) or []:
            where = f"{f}: {d.get('kind', '?')}/{(d.get('metadata') or {}).get('name', '?')}" \
                if isinstance(d, dict) else f
            if not rep.check(isinstance(d, dict), f, "a document that is not a mapping"):
                continue
            rep.check(bool(d.get("apiVersion")), where, "apiVersion missing")
            rep.check(bool(d.get("kind")), where, "kind missing")
            md = d.get("metadata") or {}
            rep.check(bool(md.get("name")), where, "metadata.name missing")
            rep.check("namespace" not in md, where, "metadata.namespace set: keep the manifests namespace-agnostic")
            objs.append((where, d))

    def of(kind):
        return [(w, d) for w, d in objs if d.get("kind") == kind]

    for kind in ("Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret"):
        rep.check(len(of(kind)) >= 1, base, f"no {kind}")
    secrets = {d["metadata"]["name"]: _secret_data(d, w, rep) for w, d in of("Secret") if d.get("metadata")}
    cmaps = {d["metadata"]["name"]: (w, d.get("data") or {}) for w, d in of("ConfigMap") if d.get("metadata")}
    for where, cm in cmaps.values():
        for key, text in cm.items():
            rep.check(isinstance(text, str), where, f"data.{key} must be a string")
    deps = of("Deployment")
    if not deps:
        return
    where, dep = deps[0]
    spec = dep.get("spec") or {}
    rep.check(dep.get("apiVersion") == "apps/v1", where, "apiVersion must be apps/v1")
    tmpl = spec.get("template") or {}
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    pod = tmpl.get("spec") or {}
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    rep.check(bool(sel) and _subset(sel, labels), where, "spec.selector.matchLabels do not match the pod labels")
    rep.check(isinstance(spec.get("replicas"), int) and spec["replicas"] >= 1, where, "replicas missing")
    rep.check(pod.get("enableServiceLinks") is False, where,
              "enableServiceLinks: false missing: Kubernetes would inject TWIN_<SERVICE>_SERVICE_HOST... for "
              "Services named twin-*, and the engine refuses TWIN_* variables that name no setting")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    rep.check(isinstance(grace, int) and grace >= 45, where,
              "terminationGracePeriodSeconds under 45: the final flush on SIGTERM may be cut short")
    psc = pod.get("securityContext") or {}
    containers = pod.get("containers") or []
    if not rep.check(bool(containers), where, "no containers"):
        return
    c = next((x for x in containers if "twin-engine" in str(x.get("image", ""))), containers[0])
    cw = f"{where}: container {c.get('name')}"
    img = str(c.get("image", "")).split("@")[0].rsplit(":", 1)[0]
    rep.check(any(i.get("name") == img for i in kust.get("images", [])) or not kust.get("images"), kust_rel,
              f"images: no entry for the container image {img}")
    csc = c.get("securityContext") or {}
    rep.check(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, cw, "runAsNonRoot: true missing")
    rep.check(csc.get("runAsUser", psc.get("runAsUser", 1)) != 0, cw, "runAsUser 0 (root)")
    rep.check(csc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem: true missing")
    rep.check(csc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation: false missing")
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            rep.check(r in (res.get(kind) or {}), cw, f"resources.{kind}.{r} missing")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    numbers = set(ports.values())

    def port_of(p):
        return ports.get(p) if isinstance(p, str) else p if p in numbers else None

    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        pr = c.get(probe)
        if pr is None and probe == "startupProbe":
            continue
        g = (pr or {}).get("httpGet") or {}
        rep.check(g.get("path") == path, cw, f"{probe}: expected httpGet path {path}, not {g.get('path')}")
        rep.check(port_of(g.get("port")) is not None, cw,
                  f"{probe}: port {g.get('port')} is not a container port ({sorted(numbers)})")
    # Environment and where the config comes from.
    env, env_vals = c.get("env") or [], {}
    for item in env:
        n = item.get("name", "")
        _, why = settings.env_key(n)
        rep.check(why is None, cw, f"env {n} {why}")
        vf = item.get("valueFrom") or {}
        if "value" in item:
            env_vals[n] = str(item["value"])
        elif "secretKeyRef" in vf:
            ref = vf["secretKeyRef"]
            if rep.check(ref.get("name") in secrets, cw, f"env {n}: secretKeyRef names no Secret here "
                                                         f"({ref.get('name')})"):
                data = secrets[ref["name"]]
                if rep.check(ref.get("key") in data, cw, f"env {n}: Secret {ref['name']} has no key "
                                                         f"{ref.get('key')}"):
                    env_vals[n] = data[ref["key"]]
        elif "configMapKeyRef" in vf:
            ref = vf["configMapKeyRef"]
            ok = ref.get("name") in cmaps and ref.get("key") in cmaps[ref["name"]][1]
            if rep.check(ok, cw, f"env {n}: configMapKeyRef {ref.get('name')}/{ref.get('key')} does not exist"):
                env_vals[n] = cmaps[ref["name"]][1][ref["key"]]
    for src in c.get("envFrom") or []:
        for kind, table in (("secretRef", secrets), ("configMapRef", {k: v[1] for k, v in cmaps.items()})):
            if kind in src:
                nm = src[kind].get("name")
                if rep.check(nm in table, cw, f"envFrom {kind} {nm}: not defined here"):
                    for k in table[nm]:
                        _, why = settings.env_key(k)
                        rep.check(why is None, cw, f"envFrom {nm}: {k} {why}")
    mounts = {m.get("name"): m for m in c.get("volumeMounts") or []}
    vols = {v.get("name"): v for v in pod.get("volumes") or []}
    for m in mounts:
        rep.check(m in vols, cw, f"volumeMount {m}: no such volume")
    args = [str(a) for a in (c.get("args") or [])]
    rep.check(c.get("command") in (None, ["twin-engine"]), cw, "command overrides the image's ENTRYPOINT twin-engine")
    rep.check(args[:1] == ["run"], cw, "args must start with run (twin-engine run --config FILE)")
    cfg_path = args[args.index("--config") + 1] if "--config" in args[:-1] else env_vals.get("TWIN_CONFIG")
    cfg_text = None
    if rep.check(cfg_path is not None, cw, "no config file (args --config FILE from the ConfigMap)"):
        for mname, m in mounts.items():
            mp = m.get("mountPath", "").rstrip("/") + "/"
            if cfg_path.startswith(mp):
                v = vols.get(mname) or {}
                cmn = (v.get("configMap") or {}).get("name")
                rest = cfg_path[len(mp):]
                items = (v.get("configMap") or {}).get("items")
                key = next((i["key"] for i in items if i.get("path") == rest), None) if items else rest
                if rep.check(cmn in cmaps, cw, f"{cfg_path}: volume {mname} is not a ConfigMap defined here"):
                    if rep.check(key in cmaps[cmn][1], cw, f"{cfg_path}: ConfigMap {cmn} has no such key"):
                        cfg_text = cmaps[cmn][1][key]
                        cmw = f"{cmaps[cmn][0]}: data.{key}"
                break
        else:
            rep.fail(cw, f"--config {cfg_path} is not under a volumeMount")
    flat = {}
    if cfg_text is not None:
        flat = flatten_engine_yaml(cfg_text, cmw, rep, settings) or {}
        for k, v in flat.items():
            rep.check(not secret_like(k), cmw, f"{k}: a secret in the ConfigMap; put it in the Secret (TWIN_* env)")
        rep.check("@" not in str(flat.get("mongo.uri", "")), cmw,
                  "mongo.uri with credentials in the ConfigMap; put it in the Secret (TWIN_MONGO_URI)")
        rep.check("kafka.group.id" in flat, cmw, "kafka.group.id missing: the replicas' consumer group")
        rep.check("shards" in flat, cmw, "shards missing: the default is the node's CPU count, not the pod's")
        strat = flat.get("kafka.partition.assignment.strategy")
        rep.check(strat in (None, "range"), cmw, "kafka.partition.assignment.strategy must be range")
        # The image's ENV wins over the file: they must agree.
        img_listen = dinfo.get("env", {}).get("TWIN_HTTP_LISTEN")
        if "http.listen" in flat and img_listen and "TWIN_HTTP_LISTEN" not in env_vals:
            rep.check(flat["http.listen"] == img_listen, cmw,
                      f"http.listen {flat['http.listen']} is overridden by the image's TWIN_HTTP_LISTEN={img_listen}")
    listen = env_vals.get("TWIN_HTTP_LISTEN") or dinfo.get("env", {}).get("TWIN_HTTP_LISTEN") \
        or flat.get("http.listen") or settings.defaults.get("http.listen")
    http_port = listen_port(listen)
    rep.check(http_port in numbers, cw, f"http.listen {listen}: port {http_port} is not a container port")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        g = ((c.get(probe) or {}).get("httpGet")) or {}
        if g:
            rep.check(port_of(g.get("port")) == http_port, cw, f"{probe} is not on the HTTP port {http_port}")
    ann = (tmpl.get("metadata") or {}).get("annotations") or {}
    rep.check(ann.get("prometheus.io/scrape") == "true", where, 'annotation prometheus.io/scrape: "true" missing')
    rep.check(ann.get("prometheus.io/port") == str(http_port), where,
              f'annotation prometheus.io/port must be the string "{http_port}"')
    rep.check(ann.get("prometheus.io/path") == "/metrics", where, "annotation prometheus.io/path: /metrics missing")
    for k, v in ann.items():
        rep.check(isinstance(v, str), where, f"annotation {k}: values must be strings (quote them)")
    for w, svc in of("Service"):
        s = svc.get("spec") or {}
        rep.check(bool(s.get("selector")) and _subset(s.get("selector") or {}, labels), w,
                  "spec.selector does not match the Deployment's pod labels")
        rep.check(s.get("type", "ClusterIP") == "ClusterIP", w, "type must be ClusterIP")
        for p in s.get("ports") or []:
            rep.check(port_of(p.get("targetPort", p.get("port"))) == http_port, w,
                      f"port {p.get('port')}: targetPort {p.get('targetPort')} is not the HTTP container port")
    for w, pdb in of("PodDisruptionBudget"):
        s = pdb.get("spec") or {}
        rep.check(pdb.get("apiVersion") == "policy/v1", w, "apiVersion must be policy/v1")
        ml = (s.get("selector") or {}).get("matchLabels") or {}
        rep.check(bool(ml) and _subset(ml, labels), w, "spec.selector.matchLabels do not match the pod labels")
        rep.check("maxUnavailable" in s or "minAvailable" in s, w, "neither maxUnavailable nor minAvailable")
        if isinstance(s.get("maxUnavailable"), int):
            rep.check(1 <= s["maxUnavailable"] < spec.get("replicas", 1) + 1, w, "maxUnavailable out of range")
    for w, d in objs:
        for v in (((d.get("spec") or {}).get("template") or {}).get("spec") or {}).get("volumes") or []:
            cmn = (v.get("configMap") or {}).get("name")
            if cmn:
                rep.check(cmn in cmaps, w, f"volume {v.get('name')}: ConfigMap {cmn} is not defined here")
    # The engine's own verdict on the pod's configuration.
    if engine_bin and cfg_text is not None:
        penv = dict(dinfo.get("env", {}))
        penv.update(env_vals)
        if pod.get("enableServiceLinks") is not False:
            for w, svc in of("Service"):
                pre = svc["metadata"]["name"].upper().replace("-", "_")
                penv[f"{pre}_SERVICE_HOST"] = "10.0.0.1"
                penv[f"{pre}_SERVICE_PORT"] = "8080"
        run_args = args[1:] if args[:1] == ["run"] else args
        dump = check_config_run(engine_bin, penv, run_args, {cfg_path: cfg_text}, cw, rep)
        if dump.get("http.listen"):
            rep.check(listen_port(dump["http.listen"]) == http_port, cw,
                      f"the engine listens on {dump['http.listen']}, not on the container port {http_port}")


def _secret_data(d, where, rep):
    out = {}
    for k, v in (d.get("data") or {}).items():
        try:
            out[k] = base64.b64decode(str(v), validate=True).decode()
        except ValueError:
            rep.fail(where, f"data.{k} is not base64 (use stringData for plain text)")
    for k, v in (d.get("stringData") or {}).items():
        rep.check(isinstance(v, str), where, f"stringData.{k} must be a string")
        out[k] = str(v)
    return out


def _subset(a, b):
    return all(b.get(k) == v for k, v in a.items())


# ---- driver ------------------------------------------------------------------------


def validate(tree, engine_bin):
    rep = Report()
    files = tree.yaml_files("deploy")
    for f in files:
        load_yaml_docs(tree, f, rep)
    settings = Settings(tree, rep, engine_bin)
    dinfo = check_dockerfile(tree, rep, settings)
    check_compose(tree, rep, settings, dinfo, engine_bin)
    check_k8s(tree, rep, settings, dinfo, engine_bin)
    return rep, files, settings


# Broken variants the checks above must reject: (what, file, text, replacement,
# part of the expected error). Each replaces the first occurrence, in memory.
COMPOSE, DEPLOY, CMAP = "deploy/docker-compose.yml", "deploy/k8s/deployment.yaml", "deploy/k8s/configmap.yaml"
MUTATIONS = [
    ("compose: misspelt engine variable", COMPOSE, "TWIN_MONGO_URI:", "TWIN_MONGO_URL:", "TWIN_MONGO_URL"),
    ("compose: depends_on an unknown service", COMPOSE, "      mongo-init:\n        condition",
     "      mongo-boot:\n        condition", "no such service"),
    ("compose: service without image or build", COMPOSE, "    image: mongo:7\n    hostname", "    hostname",
     "neither image nor build"),
    ("compose: input topics not co-partitioned", COMPOSE, "--topic twin.lifecycle --partitions 12",
     "--topic twin.lifecycle --partitions 6", "co-partitioned"),
    ("compose: unescaped $ in a healthcheck", COMPOSE, "$$status", "$status", "interpolates"),
    ("compose: engine on a test-only variable", COMPOSE, "TWIN_KAFKA_BOOTSTRAP_SERVERS: kafka",
     "TWIN_KAFKA_BOOTSTRAP: kafka", "ignored by the engine"),
    ("compose: twin-sim option that does not exist", COMPOSE, "- --rate\n", "- --rates\n", "no option --rates"),
    ("k8s: readiness probe on the wrong path", DEPLOY, "path: /readyz", "path: /ready", "/readyz"),
    ("k8s: liveness probe on another port", DEPLOY,
     "path: /healthz\n              port: http\n            periodSeconds: 10",
     "path: /healthz\n              port: 9090\n            periodSeconds: 10", "livenessProbe: port 9090"),
    ("k8s: Service selector matches no pod", "deploy/k8s/service.yaml", "component: engine\n  ports",
     "component: api\n  ports", "spec.selector"),
    ("k8s: PDB selector matches no pod", "deploy/k8s/pdb.yaml", "twin-engine\n      app.kubernetes.io/component: engine",
     "twin-engine\n      app.kubernetes.io/component: worker", "matchLabels"),
    ("k8s: secretKeyRef to a missing key", DEPLOY, "key: mongo-uri", "key: mongodb-uri", "has no key mongodb-uri"),
    ("k8s: unknown key in twin.yaml", CMAP, "    snapshot.interval.ms: 1000", "    snapshot.interval: 1000",
     "snapshot.interval is not a setting"),
    ("k8s: secret in the ConfigMap", CMAP, "      # sasl.username: twin-engine",
     "      sasl.password: hunter2\n      # sasl.username: twin-engine", "a secret"),
    ("k8s: shards out of range", CMAP, "    shards: 4", "    shards: 0", "expected an integer"),
    ("k8s: service links left on", DEPLOY, "      enableServiceLinks: false\n", "", "enableServiceLinks"),
    ("k8s: YAML syntax error", "deploy/k8s/service.yaml", "  type: ClusterIP", "  type: [ClusterIP",
     "does not parse"),
    ("k8s: manifest missing from kustomization", "deploy/k8s/kustomization.yaml", "  - pdb.yaml\n", "",
     "is not listed"),
    ("Dockerfile: not Debian 12", "deploy/Dockerfile", "FROM debian:bookworm-slim AS runtime",
     "FROM ubuntu:22.04 AS runtime", "debian:bookworm"),
    ("Dockerfile: runs as root", "deploy/Dockerfile", "USER 10001:10001", "USER root", "non-root"),
    ("Dockerfile: twinctl not copied", "deploy/Dockerfile", " /src/build/bin/twinctl /usr/local/bin/",
     " /usr/local/bin/", "twinctl"),
    ("Dockerfile: runtime library missing", "deploy/Dockerfile", " libmicrohttpd12 ", " ", "libmicrohttpd12"),
]


def self_test(root, engine_bin, verbose):
    failures = []
    for desc, path, old, new, expect in MUTATIONS:
        tree = Tree(root)
        text = tree.read(path)
        if old not in text:
            failures.append(f"self-test '{desc}': {path} no longer contains {old!r}; update MUTATIONS")
            continue
        tree.overrides[path] = text.replace(old, new, 1)
        rep, _, _ = validate(tree, engine_bin)
        hit = [e for e in rep.errors if expect in e]
        if not hit:
            failures.append(f"self-test '{desc}': the broken {path} passed (expected an error with {expect!r}; "
                            f"got {rep.errors[:3]})")
        elif verbose:
            print(f"  rejected as expected: {desc}: {hit[0]}")
    return failures


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    root = os.path.abspath(args[0])
    verbose = "--verbose" in argv
    tree = Tree(root)
    engine_bin = find_binary(tree, "twin-engine")
    rep, files, settings = validate(tree, engine_bin)
    print(f"validate_deploy: {len(files)} YAML files under deploy/ + deploy/Dockerfile; settings from "
          f"{settings.source} ({len(settings.keys)} keys); twin-engine check-config: "
          f"{'run' if engine_bin else 'skipped (no build/bin/twin-engine)'}")
    for e in rep.errors:
        print(f"FAIL {e}")
    failures = []
    if not rep.errors and "--no-self-test" not in argv:
        failures = self_test(root, engine_bin, verbose)
        for f in failures:
            print(f"FAIL {f}")
        print(f"validate_deploy: self-test: {len(MUTATIONS) - len(failures)} of {len(MUTATIONS)} broken variants "
              f"rejected")
    ok = not rep.errors and not failures
    print(f"validate_deploy: {rep.checks} checks, {len(rep.errors)} problems: {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
