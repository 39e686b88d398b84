# The packages the flake uses, as fake derivations for one `system`. Attribute names, hook names
# and derivation names (pname-version) are nixpkgs' own, so a flake that passes here asks real
# nixpkgs for things that exist; the versions are made up.
{ lib, system }:
let
  isDarwin = lib.hasSuffix "-darwin" system;

  # JSON-safe form of a value, used only to give each fake derivation a stable identity.
  identity =
    v:
    if builtins.isFunction v then
      "<function>"
    else if builtins.isList v then
      map identity v
    else if builtins.isAttrs v then
      if v ? outPath then toString v.outPath else builtins.mapAttrs (_: identity) v
    else if builtins.isPath v then
      toString v
    else
      v;

  # A value Nix treats as a derivation (type + outPath), built from `kind` with `args`. As with a
  # real mkDerivation, the arguments, `passthru` and `meta` are attributes of the result, and
  # `passthru` is not part of the derivation (so it may refer to the result itself); the
  # arguments as given are kept in `standIn`. Same kind and arguments => same outPath, so "one
  # build" is visible as one outPath.
  fake =
    kind: name: args:
    let
      hash = builtins.hashString "sha256" (
        builtins.unsafeDiscardStringContext (
          builtins.toJSON (identity {
            inherit kind name system;
            args = removeAttrs args [ "passthru" ];
          })
        )
      );
      outPath = "/nix/store/${builtins.substring 0 32 hash}-${name}";
    in
    removeAttrs args [ "passthru" ]
    // args.passthru or { }
    // {
      type = "derivation";
      inherit name system outPath;
      drvPath = "${outPath}.drv";
      outputs = [ "out" ];
      meta = args.meta or { };
      standIn = { inherit kind args; };
    };

  # A package from nixpkgs' top level: `attr` is its attribute, `pname` its derivation's pname.
  tool =
    attr: pname:
    fake "tool" "${pname}-1.0" {
      inherit pname;
      version = "1.0";
      standInAttr = attr;
    };

  # A Python package built by buildPythonPackage, whose `doCheck` argument decides whether its
  # tests run (in installCheckPhase). `overridePythonAttrs` re-runs buildPythonPackage with changed
  # arguments; `overrideAttrs` changes only the mkDerivation attributes after it, where
  # `doCheck = false` leaves the tests running (buildPythonPackage has set doInstallCheck).
  pythonPackage =
    args:
    fake "python-package" "python3.13-${args.pname}-1.0" args
    // {
      overridePythonAttrs = f: pythonPackage (args // f args);
      overrideAttrs =
        f:
        pythonPackage (
          args
          // {
            mkDerivationOverrides = (args.mkDerivationOverrides or { }) // f args;
          }
        );
    };

  # The interpreter. `override` takes the arguments nixpkgs' cpython takes for its package set
  # (`packageOverrides`, `self`); like the real one, they change `pkgs` but not the derivation.
  mkPython =
    packageOverrides:
    let
      base = fake "python" "python3-3.13.0" {
        pname = "python3";
        version = "3.13.0";
      };
      self = base // {
        pythonVersion = "3.13";
        sitePackages = "lib/python3.13/site-packages";
        interpreter = "${base.outPath}/bin/python3.13";
        pkgs = packages // packageOverrides packages packages;
        withPackages =
          select:
          let
            selected = select self.pkgs;
          in
          assert builtins.isList selected;
          fake "python-env" "python3-3.13.0-env" {
            python = self;
            packages = selected;
          };
        override =
          args:
          assert lib.assertMsg (args ? self)
            "python313.override (stand-in): pass `self` (the overridden interpreter) with packageOverrides";
          mkPython (args.packageOverrides or (_: _: { }));
      };
      # Only the packages some variant uses; a name nixpkgs lacks would fail the same way.
      packages = lib.genAttrs [
        "biopython"
        "dnachisel"
        "matplotlib"
        "numpy"
        "pandas"
        "scipy"
        "torch"
        "transformers"
      ] (pname: pythonPackage { inherit pname; });
    in
    self;

  python313 = mkPython (_: _: { });
in
{
  inherit python313;
  python313Packages = python313.pkgs;

  stdenv.hostPlatform = {
    inherit system isDarwin;
    isLinux = lib.hasSuffix "-linux" system;
  };

  rustPlatform.buildRustPackage =
    args:
    assert lib.assertMsg (args ? src) "buildRustPackage (stand-in): src is required";
    assert lib.assertMsg (
      args ? cargoLock || args ? cargoHash
    ) "buildRustPackage (stand-in): cargoLock or cargoHash is required";
    fake "buildRustPackage" "${args.pname}-${args.version}" ({ doCheck = true; } // args);

  runCommand = name: env: buildCommand: fake "runCommand" name (env // { inherit buildCommand; });

  mkShell = args: fake "mkShell" (args.name or "nix-shell") args;

  # nixpkgs: makeWrapper = makeShellWrapper = makeSetupHook { name = "make-shell-wrapper-hook"; }.
  makeWrapper = fake "tool" "make-shell-wrapper-hook" { standInAttr = "makeWrapper"; };
  protobuf = tool "protobuf" "protobuf";
  pkg-config = tool "pkg-config" "pkg-config-wrapper";
  cargo = tool "cargo" "cargo";
  rustc = tool "rustc" "rustc-wrapper";
  clippy = tool "clippy" "clippy";
  rustfmt = tool "rustfmt" "rustfmt";
  rust-analyzer = tool "rust-analyzer" "rust-analyzer";
  patchelf = tool "patchelf" "patchelf";
}
// lib.optionalAttrs isDarwin {
  # Darwin only, as in nixpkgs (meta.platforms): otool and install_name_tool.
  cctools = tool "cctools" "cctools";
}
