# Turns the flake's outputs, evaluated against the stand-in nixpkgs, into plain JSON for
# check-flake.sh: `nix eval --json FLAKE#packages --apply '(import ./summary.nix).packages'`.
let
  inherit (builtins) mapAttrs map;

  # `out`, never `outPath`: an attribute set with outPath turns into that string in JSON.
  # `attr`: the nixpkgs attribute a package came from (pkgs.<attr>), for tools.
  ref = d: {
    inherit (d) name;
    out = d.outPath;
    kind = d.standIn.kind or null;
    attr = d.standInAttr or null;
  };
  pythonEnv = e: {
    inherit (e) name;
    out = e.outPath;
    python = e.standIn.args.python.outPath;
    packages = map (p: p.pname) e.standIn.args.packages;
    # Packages whose test suite was switched off (overridePythonAttrs { doCheck = false; }).
    unchecked = map (p: p.pname) (builtins.filter (p: p.doCheck or true == false) e.standIn.args.packages);
  };
  describe =
    d:
    let
      a = d.standIn.args;
    in
    ref d
    // {
      inherit (d) system;
      mainProgram = d.meta.mainProgram or null;
      nativeBuildInputs = map (x: x.standInAttr or x.name) (a.nativeBuildInputs or [ ]);
      buildInputs = map ref (a.buildInputs or [ ]);
      packages = map ref (a.packages or [ ]);
      env = if d ? env then pythonEnv d.env else null;
      envs = if d ? envs then mapAttrs (_: pythonEnv) d.envs else null;
      defaultEnv = d.defaultEnv or null;
      # passthru.tests.smoke: the opt-in smoke test every wrapper carries.
      smoke = d.tests.smoke.buildCommand or null;
      unwrapped = d.unwrapped.outPath or null;
      src = a.src.files or null;
      cargoLockFile = if a ? cargoLock then toString a.cargoLock.lockFile else null;
      vars = mapAttrs (_: v: toString v) (
        builtins.intersectAttrs {
          PYO3_PYTHON = null;
          PROTOC = null;
          QNTX_PYTHON_ENV = null;
          QNTX_VARIANT = null;
        } a
      );
      doCheck = a.doCheck or null;
    }
    // builtins.intersectAttrs {
      buildCommand = null;
      buildPhase = null;
      installPhase = null;
      cargoTestFlags = null;
      shellHook = null;
    } a;
  perSystem = f: mapAttrs (_: mapAttrs (_: f));
in
{
  packages = perSystem describe;
  devShells = perSystem describe;
  checks = perSystem describe;
  apps = perSystem (app: app);
}
