#!/usr/bin/env bash
# Offline checks of flake.nix and flake.lock (nixpkgs itself cannot be fetched here):
#   1. every .nix file parses (nix-instantiate --parse);
#   2. flake.lock pins nixpkgs as agreed and agrees with flake.nix (no re-lock needed);
#   3. the flake's outputs, evaluated against the stand-in nixpkgs in tests/nix/stand-in-nixpkgs,
#      are what they should be, checked value by value against variants/*.toml, for Linux and
#      Darwin systems alike (Darwin's own linkage check included);
#   4. changes the flake is meant to take (a variant's `check = false`, dropping x86_64-darwin)
#      keep every check passing.
#
#   tests/nix/check-flake.sh              run the checks; last line "N passed, M failed"
#   tests/nix/check-flake.sh --mutations  also break flake.nix/flake.lock/variants in known ways,
#                                         one at a time, and require the checks to catch each one
#
# Installs Debian's nix-bin when nix is missing (needs root). Needs no daemon: every nix command
# uses a throwaway local store under a temporary directory. The flake is evaluated from a
# snapshot of the work tree (tracked and untracked, not ignored files) committed to a temporary
# git repo, so files not yet `git add`ed count and the real flake.lock is never touched.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$REPO/tests/nix
SYSTEMS='["x86_64-linux", "aarch64-linux", "x86_64-darwin", "aarch64-darwin"]'

WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-flake.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
RESULTS=$WORK/results
: >"$RESULTS"

pass() { echo "pass" >>"$RESULTS"; echo "ok    $*"; }
fail() { echo "fail" >>"$RESULTS"; echo "FAIL  $*"; }

ensure_nix() {
  command -v nix >/dev/null && command -v nix-instantiate >/dev/null && return
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "check-flake: nix is not installed (as root on Debian: apt-get install nix-bin)" >&2
    exit 1
  fi
  echo "check-flake: installing nix-bin"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nix-bin >/dev/null
}

# nix with no daemon, no sandbox (nothing is built) and no state outside $WORK.
nix_() {
  HOME=$WORK/home XDG_CACHE_HOME=$WORK/cache NIX_CONFIG="experimental-features = nix-command flakes
store = $WORK/store
sandbox = false
warn-dirty = false" nix "$@"
}

# Copies the work tree (what git would see, added or not) into a fresh one-commit repo at $1.
snapshot() {
  local dest=$1
  mkdir -p "$dest"
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard -- . ':!target' ':!.venvs' |
    xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
    tar -c --null -T - -f -) | tar -x -C "$dest"
  git -C "$dest" init -q
  git -C "$dest" add -A
  git -C "$dest" -c user.name=check-flake -c user.email=check-flake@localhost commit -q -m snapshot
}

check_parse() {
  local f n=0
  while IFS= read -r -d '' f; do
    n=$((n + 1))
    if out=$(nix-instantiate --parse "$f" 2>&1 >/dev/null); then
      pass "parses: ${f#"$REPO"/}"
    else
      fail "parses: ${f#"$REPO"/}: $out"
    fi
  done < <(find "$REPO" \( -name .git -o -name target -o -name .venvs \) -prune -o -name '*.nix' -type f -print0 | sort -z)
  ((n > 0)) || fail "no .nix file found under $REPO"
}

# Evaluates and asserts on the flake in directory $1 (a snapshot).
check_flake() {
  local flake=$1 kind out=$WORK/eval
  mkdir -p "$out"
  local lock_before
  lock_before=$(sha256sum <"$flake/flake.lock")

  if err=$(nix_ flake metadata --offline --no-update-lock-file "git+file://$flake" 2>&1 >/dev/null); then
    pass "flake.lock agrees with flake.nix's inputs (no re-lock needed)"
  else
    fail "flake.lock agrees with flake.nix's inputs: ${err//$'\n'/ }"
  fi

  for kind in packages devShells checks apps; do
    if ! nix_ eval --json --impure --offline --no-write-lock-file \
      --override-input nixpkgs "path:$flake/tests/nix/stand-in-nixpkgs" \
      "git+file://$flake#$kind" --apply "(import $HERE/summary.nix).$kind" \
      >"$out/$kind.json" 2>"$out/$kind.err"; then
      fail "evaluate $kind: $(grep -v -e '^warning' -e '^•' -e "^    '" -e '^  →' "$out/$kind.err" | head -c 2000)"
      echo '{}' >"$out/$kind.json"
    fi
  done

  if [[ $(sha256sum <"$flake/flake.lock") == "$lock_before" ]]; then
    pass "evaluation left flake.lock unchanged"
  else
    fail "evaluation rewrote flake.lock"
  fi

  python3 - "$flake" "$out" "$RESULTS" "$SYSTEMS" <<'PY' || fail "the assertions stopped early (traceback above)"
import json, sys
from pathlib import Path
try:
    import tomllib
except ImportError:
    sys.exit("check-flake: needs python3 >= 3.11 (tomllib)")

flake, out, results, systems = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
load = lambda kind: json.loads((out / f"{kind}.json").read_text())
packages, shells, checks, apps = (load(k) for k in ("packages", "devShells", "checks", "apps"))
variants = {p.stem: tomllib.loads(p.read_text()) for p in sorted((flake / "variants").glob("*.toml"))}

def check(ok, what, detail=""):
    with open(results, "a") as f:
        f.write("pass\n" if ok else "fail\n")
    print(("ok    " if ok else "FAIL  ") + what + ("" if ok or not detail else f": {detail}"))

def eq(actual, expected, what):
    check(actual == expected, what, f"expected {expected!r}, got {actual!r}")

lock = json.loads((flake / "flake.lock").read_text())
nixpkgs = lock["nodes"][lock["nodes"][lock["root"]]["inputs"]["nixpkgs"]]
eq({k: nixpkgs["locked"].get(k) for k in ("type", "owner", "repo", "rev", "narHash", "lastModified")},
   {"type": "github", "owner": "NixOS", "repo": "nixpkgs", "rev": "29916453413845e54a65b8a1cf996842300cd299",
    "narHash": "sha256-Ap9KJX+5xHIn3bPIpfNgT6MEXdAECECwo4/rmlQD74M=", "lastModified": 1779508470},
   "flake.lock pins nixpkgs at the agreed revision")
eq(nixpkgs["original"].get("ref"), "nixos-unstable", "flake.lock follows nixos-unstable")
eq(list(lock["nodes"][lock["root"]]["inputs"]), ["nixpkgs"], "nixpkgs is the only input")
check(len(variants) > 0, "variants/ holds at least one variant")

# The systems: all four, or the three left once x86_64-darwin is dropped (a one-line change in
# flake.nix when flake.lock moves past nixpkgs 26.05).
allowed = [sorted(systems), sorted(s for s in systems if s != "x86_64-darwin")]
for output, value in (("packages", packages), ("devShells", shells), ("checks", checks), ("apps", apps)):
    check(sorted(value) in allowed, f"{output} covers the four systems (x86_64-darwin may be dropped)", sorted(value))
systems = sorted(packages) if sorted(packages) in allowed else systems

PY_NAME = "python3-3.13.0"  # the stand-in's python313; a withPackages env is named "...-env"
flake_checked = [v for v, spec in variants.items() if spec.get("smoke-in-flake-check", True)]
for system in systems:
    pk, sh, ck, ap = (x.get(system, {}) for x in (packages, shells, checks, apps))
    s = f"[{system}]"
    darwin = system.endswith("-darwin")
    eq(sorted(pk), sorted(["default", "qntx-python-plugin", "qntx-python-plugin-unwrapped", *(f"qntx-{v}-plugin" for v in variants)]),
       f"{s} packages: default, qntx-python-plugin, qntx-python-plugin-unwrapped and one qntx-<variant>-plugin per variant")
    base, provider, default = pk.get("qntx-python-plugin-unwrapped", {}), pk.get("qntx-python-plugin", {}), pk.get("default", {})

    # The one Rust build.
    eq(base.get("kind"), "buildRustPackage", f"{s} qntx-python-plugin-unwrapped is the Rust build")
    eq(base.get("system"), system, f"{s} the Rust build is built for {system}")
    eq([i["name"] for i in base.get("buildInputs", [])], [PY_NAME],
       f"{s} the Rust build links python313 itself (standard library only)")
    py = (base.get("buildInputs") or [{}])[0].get("out")
    eq(base.get("vars", {}).get("PYO3_PYTHON"), f"{py}/bin/python3.13", f"{s} the Rust build sets PYO3_PYTHON to python313")
    check(str(base.get("vars", {}).get("PROTOC", "")).endswith("-protobuf-1.0/bin/protoc"), f"{s} the Rust build sets PROTOC to nixpkgs' protoc")
    check({"protobuf", "pkg-config", PY_NAME} <= set(base.get("nativeBuildInputs", [])), f"{s} the Rust build has protobuf, pkg-config, python313 for building")
    check(str(base.get("cargoLockFile")).endswith("-source/Cargo.lock"), f"{s} the Rust build uses the committed Cargo.lock")
    src = sorted(Path(f).name for f in base.get("src") or [])
    eq(src, sorted(["Cargo.toml", "Cargo.lock", "build.rs", "src", "proto"]),
       f"{s} the Rust build's source is Cargo.toml, Cargo.lock, build.rs, src/, proto/ (no variants/)")
    rust_builds = {p["out"] for p in pk.values() if p.get("kind") == "buildRustPackage"}
    eq(len(rust_builds), 1, f"{s} packages hold exactly one Rust build")
    eq(ap.get("qntx-python-plugin-unwrapped", {}).get("program"), f"{base.get('out')}/bin/qntx-python-plugin", f"{s} app qntx-python-plugin-unwrapped runs the Rust build")

    # Every variant: a wrapper around that build, with its environment and its name.
    env_of = {}
    for v, spec in variants.items():
        exe, p = f"qntx-{v}-plugin", pk.get(f"qntx-{v}-plugin", {})
        cmd, env = p.get("buildCommand") or "", p.get("env") or {}
        env_of[v] = env
        eq(p.get("kind"), "runCommand", f"{s} {exe} is a wrapper, not another build")
        eq(p.get("system"), system, f"{s} {exe} is for {system}")
        eq(p.get("mainProgram"), exe, f"{s} {exe} has mainProgram {exe}")
        check(f"$out/bin/{exe} " in cmd, f"{s} {exe} installs bin/{exe}", cmd)
        check("makeWrapper" in p.get("nativeBuildInputs", []) and f"makeWrapper {base.get('out')}/bin/qntx-python-plugin " in cmd,
              f"{s} {exe} wraps the one Rust build with makeWrapper", cmd)
        eq(p.get("unwrapped"), base.get("out"), f"{s} {exe}.unwrapped is the one Rust build")
        check(f'--add-flags "--name {v} ' in cmd, f"{s} {exe} passes --name {v}", cmd)
        check(f"--python-env {env.get('out')} " in cmd, f"{s} {exe} passes --python-env <its environment>", cmd)
        check(f"-{v}.toml\"" in cmd and "--variant /nix/store/" in cmd, f"{s} {exe} passes --variant <variants/{v}.toml>", cmd)
        eq(env.get("python"), py, f"{s} {exe}'s environment is built from the interpreter the Rust build links")
        eq(env.get("packages"), [q["nix"] for q in spec["packages"]], f"{s} {exe}'s environment holds exactly variants/{v}.toml's packages")
        eq(env.get("unchecked"), [q["nix"] for q in spec["packages"] if q.get("check") is False],
           f"{s} {exe}'s environment switches off the tests of exactly the packages marked check = false")
        eq(ap.get(exe, {}).get("program"), f"{p.get('out')}/bin/{exe}", f"{s} app {exe} runs bin/{exe}")
        check(f"{p.get('out')}/bin/{exe} --check-environment" in (p.get("smoke") or ""),
              f"{s} {exe}.tests.smoke runs {exe} --check-environment", p.get("smoke"))
        if v in flake_checked:
            check(f"{p.get('out')}/bin/{exe} --check-environment" in (ck.get(f"smoke-{v}", {}).get("buildCommand") or ""),
                  f"{s} checks.smoke-{v} runs {exe} --check-environment")
        else:
            check(f"smoke-{v}" not in ck, f"{s} variants/{v}.toml opts out: no checks.smoke-{v} in nix flake check")

        shell = sh.get(v, {})
        vars_ = shell.get("vars", {})
        eq(vars_.get("QNTX_PYTHON_ENV"), env.get("out"), f"{s} devShells.{v} exports QNTX_PYTHON_ENV (its environment)")
        check(str(vars_.get("QNTX_VARIANT", "")).endswith(f"-{v}.toml"), f"{s} devShells.{v} exports QNTX_VARIANT")
        check(env.get("out") in [i["out"] for i in shell.get("packages", [])], f"{s} devShells.{v} has the environment on PATH")
        eq(vars_.get("PYO3_PYTHON"), f"{py}/bin/python3.13", f"{s} devShells.{v} sets PYO3_PYTHON to python313")
        hook = shell.get("shellHook") or ""
        check("nix-store --add-root" in hook and f"{py} " in hook and f"{env.get('out')}" in hook,
              f"{s} devShells.{v} makes python313 and its environment GC roots", hook)

    # The `python` provider: every environment, in one process, as `python`.
    cmd, envs = provider.get("buildCommand") or "", provider.get("envs") or {}
    eq(default.get("out"), provider.get("out"), f"{s} default is the python provider (qntx-python-plugin)")
    eq(provider.get("kind"), "runCommand", f"{s} qntx-python-plugin is a wrapper, not another build")
    eq(provider.get("mainProgram"), "qntx-python-plugin", f"{s} qntx-python-plugin has mainProgram qntx-python-plugin")
    eq(provider.get("unwrapped"), base.get("out"), f"{s} qntx-python-plugin.unwrapped is the one Rust build")
    check("makeWrapper" in provider.get("nativeBuildInputs", []) and
          f"makeWrapper {base.get('out')}/bin/qntx-python-plugin $out/bin/qntx-python-plugin " in cmd,
          f"{s} qntx-python-plugin wraps the one Rust build as bin/qntx-python-plugin", cmd)
    flags = cmd.split('--add-flags "', 1)[-1].split('"', 1)[0].split()
    pairs = lambda flag: [flags[i + 1] for i, f in enumerate(flags[:-1]) if f == flag]
    eq(pairs("--name"), ["python"], f"{s} qntx-python-plugin passes --name python, once")
    eq(sorted(envs), sorted(variants), f"{s} qntx-python-plugin carries one environment per variant")
    eq(pairs("--env"), [f"{v}={env_of[v].get('out')}" for v in sorted(variants)],
       f"{s} qntx-python-plugin passes --env <variant>=<the variant's own environment> for each variant")
    variant_flags = pairs("--variant")
    check(len(variant_flags) == len(variants) and all(f.startswith(f"{v}=/nix/store/") and f.endswith(f"-{v}.toml")
                                                      for f, v in zip(variant_flags, sorted(variants))),
          f"{s} qntx-python-plugin passes --variant <variant>=<variants/<variant>.toml> for each variant", variant_flags)
    check(pairs("--default-env") == [provider.get("defaultEnv")] and provider.get("defaultEnv") in variants,
          f"{s} qntx-python-plugin passes --default-env <defaultEnv>, a variant", pairs("--default-env"))
    eq(ap.get("default", {}).get("program"), f"{provider.get('out')}/bin/qntx-python-plugin", f"{s} app default runs the python provider")
    check(f"{provider.get('out')}/bin/qntx-python-plugin --check-environment" in (provider.get("smoke") or ""),
          f"{s} qntx-python-plugin.tests.smoke runs the provider with every environment")
    smoke = ck.get("smoke-python", {}).get("buildCommand") or ""
    smoke_flags = smoke.split()
    check(smoke.strip().startswith(f"{base.get('out')}/bin/qntx-python-plugin --name python ") and "--check-environment" in smoke
          and [f for i, f in enumerate(smoke_flags[1:]) if smoke_flags[i] == "--env"] == [f"{v}={env_of[v].get('out')}" for v in sorted(flake_checked)],
          f"{s} checks.smoke-python runs the provider's flags with the environments nix flake check builds ({', '.join(sorted(flake_checked))})", smoke)

    # Dev shells.
    shell = sh.get("default", {})
    eq(sorted(sh), sorted(["default", *variants]), f"{s} devShells: default and one per variant")
    eq(shell.get("vars", {}).get("PYO3_PYTHON"), f"{py}/bin/python3.13", f"{s} devShells.default sets PYO3_PYTHON to python313")
    check(str(shell.get("vars", {}).get("PROTOC", "")).endswith("-protobuf-1.0/bin/protoc"), f"{s} devShells.default sets PROTOC")
    eq(sorted(i["attr"] or i["name"] for i in shell.get("packages", [])),
       sorted(["cargo", "rustc", "clippy", "rustfmt", "rust-analyzer", "protobuf", "pkg-config", PY_NAME]),
       f"{s} devShells.default has the Rust toolchain, protobuf, pkg-config and python313")
    hook = shell.get("shellHook") or ""
    check("nix-store --add-root" in hook and f"{py}" in hook and "QNTX_NO_GC_ROOTS" in hook,
          f"{s} devShells.default makes python313 a GC root (unless QNTX_NO_GC_ROOTS)", hook)

    # Checks.
    eq(ck.get("package", {}).get("out"), base.get("out"), f"{s} checks.package builds the Rust build")
    tests = ck.get("tests", {})
    check(tests.get("kind") == "buildRustPackage" and tests.get("doCheck") is True and tests.get("cargoTestFlags") == ["--lib", "--bins"],
          f"{s} checks.tests runs the unit tests (--lib --bins)", json.dumps(tests.get("cargoTestFlags")))
    clippy = ck.get("clippy", {})
    phase = clippy.get("buildPhase") or ""
    check("clippy" in clippy.get("nativeBuildInputs", []) and "cargo clippy" in phase and "--all-targets" in phase
          and "-D warnings" not in phase and "-Dwarnings" not in phase,
          f"{s} checks.clippy runs clippy on every target and reports warnings without failing", phase)
    check("cargo fmt" in (ck.get("fmt", {}).get("buildCommand") or "") and "--check" in (ck.get("fmt", {}).get("buildCommand") or ""),
          f"{s} checks.fmt runs cargo fmt --check")

    # How the built binary finds libpython: RUNPATH on Linux, an absolute install name on Darwin.
    link = ck.get("linkage", {})
    lcmd, tools = link.get("buildCommand") or "", link.get("nativeBuildInputs", [])
    binary = f"{base.get('out')}/bin/qntx-python-plugin"
    if darwin:
        check(tools == ["cctools"] and f"otool -L {binary}" in lcmd
              and f'grep -F "{py}/lib/libpython3.13.dylib"' in lcmd and "@rpath/libpython" in lcmd and "exit 1" in lcmd,
              f"{s} checks.linkage: otool finds libpython by its absolute store path, and an @rpath reference fails", lcmd)
    else:
        check(tools == ["patchelf"] and f"patchelf --print-needed {binary}" in lcmd and f"patchelf --print-rpath {binary}" in lcmd
              and 'grep -Fx "libpython3.13.so.1.0"' in lcmd and f'grep -Fx "{py}/lib"' in lcmd,
              f"{s} checks.linkage: the binary needs libpython3.13.so.1.0 and its RUNPATH has python313's lib/", lcmd)
PY
}

# Applies edits "FILE|OLD|NEW" (several joined by ";;", "\n" for a newline) to the snapshot in $1;
# each OLD must occur exactly once.
apply_edits() {
  python3 - "$1" "$2" <<'PY'
import sys
from pathlib import Path
for edit in sys.argv[2].split(";;"):
    file, old, new = edit.replace("\\n", "\n").split("|", 2)
    path = Path(sys.argv[1]) / file
    text = path.read_text()
    if text.count(old) != 1:
        sys.exit(f"edit does not apply: {old!r} occurs {text.count(old)} times in {file}")
    path.write_text(text.replace(old, new))
PY
}

# Runs check_flake on a copy of the work tree with edits $2 applied, in $WORK/$1; prints how many
# checks failed there (its failures are the point, not failures of this run), or "none" if the
# edits did not apply.
failures_with() {
  local dir=$WORK/$1
  snapshot "$dir"
  apply_edits "$dir" "$2" >&2 || { echo none; return; }
  git -C "$dir" -c user.name=m -c user.email=m@localhost commit -qam edited
  : >"$dir.results"
  RESULTS=$dir.results check_flake "$dir" >"$dir.log" 2>&1 || true
  grep -c '^fail$' "$dir.results" || true
}

# Changes the flake must take: every check still passes.
run_scenarios() {
  local -a names=(
    "a variant switches off a package's test suite (check = false)"
    "x86_64-darwin dropped with one line"
  )
  local -a edits=(
    'variants/bio.toml|nix = "dnachisel"\n|nix = "dnachisel"\ncheck = false\n'
    'flake.nix|        "x86_64-darwin"\n|'
  )
  local i failed
  for i in "${!names[@]}"; do
    failed=$(failures_with "scenario-$i" "${edits[$i]}")
    if [[ $failed == 0 ]]; then
      pass "scenario passes: ${names[$i]}"
    else
      fail "scenario '${names[$i]}': $failed checks failed"
      sed 's/^/      /' "$WORK/scenario-$i.log" | grep -v '^      ok' || true
    fi
  done
}

# Known ways to break the flake; the checks must catch every one.
run_mutations() {
  local -a names=(
    "wrapper passes a fixed --name"
    "environment drops a variant's first package"
    "each variant builds Rust again"
    "dev shell without PYO3_PYTHON"
    "default is the unwrapped build"
    "a system is missing"
    "flake.nix follows another branch than flake.lock"
    "flake.lock pins another revision"
    "the Rust build's source lacks proto/"
    "wrapper without --python-env"
    "provider drops an environment"
    "provider without --default-env"
    "provider answers as bio"
    "provider without --variant"
    "clippy denies warnings in nix flake check"
    "ml's smoke test back in nix flake check"
    "check = false is ignored"
    "check = false overrides with overrideAttrs (tests still run)"
    "dev shell without a GC root"
    "linkage check without the rpath test"
    "Darwin linkage check accepts @rpath"
  )
  local -a edits=(
    'flake.nix|--add-flags "--name ${name} |--add-flags "--name python '
    'flake.nix|map (p: ps.${p.nix}) variant.packages|map (p: ps.${p.nix}) (builtins.tail variant.packages)'
    'flake.nix|makeWrapper ${plugin}/bin/qntx-python-plugin $out/bin/${exe}|makeWrapper ${pkgs.rustPlatform.buildRustPackage (rustArgs // { pname = exe; })}/bin/qntx-python-plugin $out/bin/${exe}'
    'flake.nix|devEnv = {\n            PYO3_PYTHON = python.interpreter;|devEnv = {'
    'flake.nix|default = provider;|default = plugin;'
    'flake.nix|        "aarch64-darwin"\n|'
    'flake.nix|nixpkgs/nixos-unstable|nixpkgs/nixos-24.11'
    'flake.lock|29916453413845e54a65b8a1cf996842300cd299|29916453413845e54a65b8a1cf996842300cd298'
    'flake.nix|./src\n            ./proto\n          ];\n          buildSrc|./src\n          ];\n          buildSrc'
    'flake.nix| --python-env ${envs.${name}}|'
    'flake.nix|map (n: "--env ${n}=${envs.${n}}") names|map (n: "--env ${n}=${envs.${n}}") (builtins.tail names)'
    'flake.nix|++ lib.optional (builtins.elem defaultEnv names) "--default-env ${defaultEnv}"|'
    'flake.nix|[ "--name python" ]|[ "--name bio" ]'
    'flake.nix|++ map (n: "--variant ${n}=${variants.${n}.path}") names|'
    'flake.nix|buildPhase = "cargo clippy --offline --all-targets";|buildPhase = "cargo clippy --offline --all-targets -- -D warnings";'
    'flake.nix|flakeChecked = lib.filterAttrs (_: v: v.smoke-in-flake-check or true) variants;|flakeChecked = variants;'
    'variants/bio.toml|nix = "dnachisel"\n|nix = "dnachisel"\ncheck = false\n;;flake.nix|if unchecked == [ ] then python else overridden|python'
    'variants/bio.toml|nix = "dnachisel"\n|nix = "dnachisel"\ncheck = false\n;;flake.nix|super.${p.nix}.overridePythonAttrs|super.${p.nix}.overrideAttrs'
    'flake.nix|shellHook = gcRootsHook [ python ];|'
    "flake.nix|grep -Fx \"\${lib'}\" \$out|true"
    'flake.nix|echo "libpython is referenced through @rpath, which the binary does not set" >&2\n                      exit 1|true'
  )
  local i caught
  for i in "${!names[@]}"; do
    caught=$(failures_with "mutant-$i" "${edits[$i]}")
    if [[ $caught == none ]]; then
      fail "mutation '${names[$i]}' could not be applied"
    elif ((caught > 0)); then
      pass "mutation caught: ${names[$i]} ($caught checks failed)"
    else
      fail "mutation NOT caught: ${names[$i]}"
      sed 's/^/      /' "$WORK/mutant-$i.log"
    fi
  done
}

main() {
  ensure_nix
  command -v python3 >/dev/null || { echo "check-flake: python3 is required" >&2; exit 1; }
  echo "check-flake: $(nix --version), $(python3 --version)"

  check_parse
  snapshot "$WORK/flake"
  check_flake "$WORK/flake"

  run_scenarios
  if [[ ${1:-} == --mutations ]]; then
    run_mutations
  fi

  local passed failed
  passed=$(grep -c '^pass$' "$RESULTS" || true)
  failed=$(grep -c '^fail$' "$RESULTS" || true)
  echo "$passed passed, $failed failed"
  ((failed == 0))
}

main "$@"
