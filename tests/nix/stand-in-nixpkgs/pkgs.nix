# The packages the flake uses, as fake derivations for one `system`.
{ lib, system }:
let
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
  # real mkDerivation, the arguments, `passthru` and `meta` are attributes of the result; the
  # arguments as given are kept in `standIn`. Same kind and arguments => same outPath, so "one
  # build" is visible as one outPath.
  fake =
    kind: name: args:
    let
      hash = builtins.hashString "sha256" (
        builtins.unsafeDiscardStringContext (builtins.toJSON (identity {
          inherit kind name system args;
        }))
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

  tool = pname: fake "tool" pname { inherit pname; };

  python313 =
    let
      self = fake "python" "python3-3.13.0" { pname = "python3"; version = "3.13.0"; } // {
        pythonVersion = "3.13";
        sitePackages = "lib/python3.13/site-packages";
        interpreter = "${self.outPath}/bin/python3.13";
        pkgs = packages;
        withPackages =
          select:
          let
            selected = select packages;
          in
          assert builtins.isList selected;
          fake "python-env" "python3-3.13.0-env" {
            python = self;
            packages = selected;
          };
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
      ] (pname: fake "python-package" "python3.13-${pname}" { inherit pname; });
    in
    self;
in
{
  inherit python313;
  python313Packages = python313.pkgs;

  stdenv.hostPlatform.system = system;

  rustPlatform.buildRustPackage =
    args:
    assert lib.assertMsg (args ? src) "buildRustPackage (stand-in): src is required";
    assert lib.assertMsg (
      args ? cargoLock || args ? cargoHash
    ) "buildRustPackage (stand-in): cargoLock or cargoHash is required";
    fake "buildRustPackage" "${args.pname}-${args.version}" ({ doCheck = true; } // args);

  runCommand = name: env: buildCommand: fake "runCommand" name (env // { inherit buildCommand; });

  mkShell = args: fake "mkShell" (args.name or "nix-shell") args;

  makeWrapper = tool "make-wrapper-hook";
  protobuf = tool "protobuf";
  pkg-config = tool "pkg-config";
  cargo = tool "cargo";
  rustc = tool "rustc";
  clippy = tool "clippy";
  rustfmt = tool "rustfmt";
  rust-analyzer = tool "rust-analyzer";
}
