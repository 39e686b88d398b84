#!/usr/bin/env bash
# Offline checks of flake.nix and flake.lock (nixpkgs itself cannot be fetched here):
#   1. every .nix file parses (nix-instantiate --parse);
#   2. flake.lock pins nixpkgs as agreed and agrees with flake.nix (no re-lock needed);
#   3. the flake's outputs, evaluated against the stand-in nixpkgs in tests/nix/stand-in-nixpkgs,
#      are what they should be, checked value by value against variants/*.toml.
#
#   tests/nix/check-flake.sh              run the checks; last line "N passed, M failed"
#   tests/nix/check-flake.sh --mutations  also break flake.nix/flake.lock in known ways, one at a
#                                         time, and require the checks to catch each one
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

for output, value in (("packages", packages), ("devShells", shells), ("checks", checks), ("apps", apps)):
    eq(sorted(value), sorted(systems), f"{output} covers exactly the four systems")

PY_NAME = "python3-3.13.0"  # the stand-in's python313; a withPackages env is named "...-env"
for system in systems:
    pk, sh, ck, ap = (x.get(system, {}) for x in (packages, shells, checks, apps))
    s = f"[{system}]"
    eq(sorted(pk), sorted(["default", "qntx-python-plugin", *(f"qntx-{v}-plugin" for v in variants)]),
       f"{s} packages: default, qntx-python-plugin and one qntx-<variant>-plugin per variant")
    base, default = pk.get("qntx-python-plugin", {}), pk.get("default", {})

    # The one Rust build.
    eq(base.get("kind"), "buildRustPackage", f"{s} qntx-python-plugin is the Rust build")
    eq(default.get("out"), base.get("out"), f"{s} default is qntx-python-plugin")
    eq(base.get("system"), system, f"{s} qntx-python-plugin is built for {system}")
    eq([i["name"] for i in base.get("buildInputs", [])], [PY_NAME],
       f"{s} qntx-python-plugin links python313 itself (standard library only)")
    py = (base.get("buildInputs") or [{}])[0].get("out")
    eq(base.get("vars", {}).get("PYO3_PYTHON"), f"{py}/bin/python3.13", f"{s} the Rust build sets PYO3_PYTHON to python313")
    check(str(base.get("vars", {}).get("PROTOC", "")).endswith("-protobuf/bin/protoc"), f"{s} the Rust build sets PROTOC to nixpkgs' protoc")
    check({"protobuf", "pkg-config", PY_NAME} <= set(base.get("nativeBuildInputs", [])), f"{s} the Rust build has protobuf, pkg-config, python313 for building")
    check(str(base.get("cargoLockFile")).endswith("-source/Cargo.lock"), f"{s} the Rust build uses the committed Cargo.lock")
    src = sorted(Path(f).name for f in base.get("src") or [])
    eq(src, sorted(["Cargo.toml", "Cargo.lock", "build.rs", "src", "proto"]),
       f"{s} the Rust build's source is Cargo.toml, Cargo.lock, build.rs, src/, proto/ (no variants/)")
    rust_builds = {p["out"] for p in pk.values() if p.get("kind") == "buildRustPackage"}
    eq(len(rust_builds), 1, f"{s} packages hold exactly one Rust build")
    eq(ap.get("default", {}).get("program"), f"{base.get('out')}/bin/qntx-python-plugin", f"{s} app default runs the binary")

    for v, spec in variants.items():
        exe, p = f"qntx-{v}-plugin", pk.get(f"qntx-{v}-plugin", {})
        cmd, env = p.get("buildCommand") or "", p.get("env") or {}
        eq(p.get("kind"), "runCommand", f"{s} {exe} is a wrapper, not another build")
        eq(p.get("system"), system, f"{s} {exe} is for {system}")
        eq(p.get("mainProgram"), exe, f"{s} {exe} has mainProgram {exe}")
        check(f"$out/bin/{exe} " in cmd, f"{s} {exe} installs bin/{exe}", cmd)
        check("make-wrapper-hook" in p.get("nativeBuildInputs", []) and f"makeWrapper {base.get('out')}/bin/qntx-python-plugin " in cmd,
              f"{s} {exe} wraps the one Rust build with makeWrapper", cmd)
        eq(p.get("unwrapped"), base.get("out"), f"{s} {exe}.unwrapped is the one Rust build")
        check(f'--add-flags "--name {v} ' in cmd, f"{s} {exe} passes --name {v}", cmd)
        check(f"--python-env {env.get('out')} " in cmd, f"{s} {exe} passes --python-env <its environment>", cmd)
        check(f"-{v}.toml\"" in cmd and "--variant /nix/store/" in cmd, f"{s} {exe} passes --variant <variants/{v}.toml>", cmd)
        eq(env.get("python"), py, f"{s} {exe}'s environment is python313.withPackages")
        eq(env.get("packages"), [q["nix"] for q in spec["packages"]], f"{s} {exe}'s environment holds exactly variants/{v}.toml's packages")
        eq(ap.get(exe, {}).get("program"), f"{p.get('out')}/bin/{exe}", f"{s} app {exe} runs bin/{exe}")
        smoke = ck.get(f"smoke-{v}", {}).get("buildCommand") or ""
        check(f"{p.get('out')}/bin/{exe} --check-environment" in smoke, f"{s} checks.smoke-{v} runs {exe} --check-environment", smoke)

        shell = sh.get(v, {})
        vars_ = shell.get("vars", {})
        eq(vars_.get("QNTX_PYTHON_ENV"), env.get("out"), f"{s} devShells.{v} exports QNTX_PYTHON_ENV (its environment)")
        check(str(vars_.get("QNTX_VARIANT", "")).endswith(f"-{v}.toml"), f"{s} devShells.{v} exports QNTX_VARIANT")
        check(env.get("out") in [i["out"] for i in shell.get("packages", [])], f"{s} devShells.{v} has the environment on PATH")
        eq(vars_.get("PYO3_PYTHON"), f"{py}/bin/python3.13", f"{s} devShells.{v} sets PYO3_PYTHON to python313")

    shell = sh.get("default", {})
    eq(sorted(sh), sorted(["default", *variants]), f"{s} devShells: default and one per variant")
    eq(shell.get("vars", {}).get("PYO3_PYTHON"), f"{py}/bin/python3.13", f"{s} devShells.default sets PYO3_PYTHON to python313")
    check(str(shell.get("vars", {}).get("PROTOC", "")).endswith("-protobuf/bin/protoc"), f"{s} devShells.default sets PROTOC")
    eq(sorted(i["name"] for i in shell.get("packages", [])),
       sorted(["cargo", "rustc", "clippy", "rustfmt", "rust-analyzer", "protobuf", "pkg-config", PY_NAME]),
       f"{s} devShells.default has the Rust toolchain, protobuf, pkg-config and python313")

    eq(ck.get("package", {}).get("out"), base.get("out"), f"{s} checks.package builds the package")
    tests = ck.get("tests", {})
    check(tests.get("kind") == "buildRustPackage" and tests.get("doCheck") is True and tests.get("cargoTestFlags") == ["--lib", "--bins"],
          f"{s} checks.tests runs the unit tests (--lib --bins)", json.dumps(tests.get("cargoTestFlags")))
    clippy = ck.get("clippy", {})
    check("clippy" in clippy.get("nativeBuildInputs", []) and "cargo clippy" in (clippy.get("buildPhase") or "")
          and (clippy.get("buildPhase") or "").endswith("-D warnings"), f"{s} checks.clippy denies warnings")
    check("cargo fmt" in (ck.get("fmt", {}).get("buildCommand") or "") and "--check" in (ck.get("fmt", {}).get("buildCommand") or ""),
          f"{s} checks.fmt runs cargo fmt --check")
PY
}

# Known ways to break the flake; the checks must catch every one.
run_mutations() {
  local -a names=(
    "wrapper passes a fixed --name"
    "environment drops a variant's first package"
    "each variant builds Rust again"
    "dev shell without PYO3_PYTHON"
    "default is a variant"
    "a system is missing"
    "flake.nix follows another branch than flake.lock"
    "flake.lock pins another revision"
    "the Rust build's source lacks proto/"
    "wrapper without --python-env"
  )
  local -a edits=(
    'flake.nix|--add-flags "--name ${name} |--add-flags "--name python '
    'flake.nix|map (p: ps.${p.nix}) variant.packages|map (p: ps.${p.nix}) (builtins.tail variant.packages)'
    'flake.nix|makeWrapper ${plugin}/bin|makeWrapper ${pkgs.rustPlatform.buildRustPackage (rustArgs // { pname = exe; })}/bin'
    'flake.nix|devEnv = {\n            PYO3_PYTHON = python.interpreter;|devEnv = {'
    'flake.nix|default = plugin;|default = variantPackages.qntx-bio-plugin;'
    'flake.nix|        "aarch64-darwin"\n|'
    'flake.nix|nixpkgs/nixos-unstable|nixpkgs/nixos-24.11'
    'flake.lock|29916453413845e54a65b8a1cf996842300cd299|29916453413845e54a65b8a1cf996842300cd298'
    'flake.nix|./src\n            ./proto\n          ];\n          buildSrc|./src\n          ];\n          buildSrc'
    'flake.nix| --python-env ${env}|'
  )
  local i dir caught
  for i in "${!names[@]}"; do
    dir=$WORK/mutant-$i
    snapshot "$dir"
    if ! python3 - "$dir" "${edits[$i]}" <<'PY'; then
import sys
from pathlib import Path
file, old, new = sys.argv[2].replace("\\n", "\n").split("|", 2)
path = Path(sys.argv[1]) / file
text = path.read_text()
if text.count(old) != 1:
    sys.exit(f"mutation does not apply: {old!r} occurs {text.count(old)} times in {file}")
path.write_text(text.replace(old, new))
PY
      fail "mutation '${names[$i]}' could not be applied"
      continue
    fi
    git -C "$dir" -c user.name=m -c user.email=m@localhost commit -qam mutant
    # The mutant's own tally: its failures are the point, not failures of this run.
    : >"$WORK/mutant-$i.results"
    RESULTS=$WORK/mutant-$i.results check_flake "$dir" >"$WORK/mutant-$i.log" 2>&1 || true
    caught=$(grep -c '^fail$' "$WORK/mutant-$i.results" || true)
    if ((caught > 0)); then
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
