{
  description = "qntx-python-plugin: QNTX's Python provider, one Rust build wrapped once per Python environment";

  # The only input. Everything else (systems, variants) is defined here, so the stand-in under
  # tests/nix/stand-in-nixpkgs can replace it for offline evaluation tests.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { nixpkgs, ... }:
    let
      inherit (nixpkgs) lib;

      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # One variant per variants/<name>.toml; the file's `name` must match its file name.
      variants = lib.mapAttrs' (
        file: _:
        let
          name = lib.removeSuffix ".toml" file;
          path = ./variants + "/${file}";
          variant = builtins.fromTOML (builtins.readFile path);
        in
        assert lib.assertMsg (variant.name or null == name)
          "variants/${file}: name must be \"${name}\" (its file name)";
        lib.nameValuePair name (variant // { inherit path; })
      ) (lib.filterAttrs (file: type: type == "regular" && lib.hasSuffix ".toml" file) (builtins.readDir ./variants));

      perSystem =
        pkgs:
        let
          # The one interpreter: the Rust build links it, every environment is built from it.
          python = pkgs.python313;

          # What the Rust build needs, and nothing else: a new or edited variant must not rebuild
          # Rust. proto/ is listed explicitly (build.rs compiles it).
          buildFiles = [
            ./Cargo.toml
            ./Cargo.lock
            ./build.rs
            ./src
            ./proto
          ];
          buildSrc = lib.fileset.toSource {
            root = ./.;
            fileset = lib.fileset.unions buildFiles;
          };
          # The checks (unit tests, clippy over every target) also see the variant files and tests.
          checkSrc = lib.fileset.toSource {
            root = ./.;
            fileset = lib.fileset.unions (buildFiles ++ [
              ./variants
              ./tests
            ]);
          };

          rustArgs = {
            pname = "qntx-python-plugin";
            version = (lib.importTOML ./Cargo.toml).package.version;
            src = buildSrc;
            cargoLock.lockFile = ./Cargo.lock;
            nativeBuildInputs = [
              pkgs.protobuf
              pkgs.pkg-config
              python
            ];
            # libpython is linked from here; the linker wrapper puts its lib/ in the RUNPATH.
            buildInputs = [ python ];
            # The exact interpreter, so pyo3 neither searches PATH nor rebuilds when PATH changes.
            PYO3_PYTHON = python.interpreter;
            # nixpkgs' protoc instead of the one vendored by protoc-bin-vendored.
            PROTOC = "${pkgs.protobuf}/bin/protoc";
            meta = {
              description = "QNTX's Python provider (standard library only)";
              mainProgram = "qntx-python-plugin";
              license = lib.licenses.mit;
            };
          };

          # The Rust build: the only one. `qntx-python-plugin` is this binary with python313's
          # standard library; its tests run in checks.tests, so editing a test never rebuilds it.
          plugin = pkgs.rustPlatform.buildRustPackage (
            rustArgs
            // {
              doCheck = false;
              passthru = { inherit python; };
            }
          );

          # A variant: the same binary, wrapped with its environment and its name. Costs seconds.
          mkVariant =
            name: variant:
            let
              env = python.withPackages (ps: map (p: ps.${p.nix}) variant.packages);
              exe = "qntx-${name}-plugin";
            in
            pkgs.runCommand exe
              {
                nativeBuildInputs = [ pkgs.makeWrapper ];
                passthru = {
                  inherit env variant;
                  unwrapped = plugin;
                };
                meta = plugin.meta // {
                  description = "QNTX's Python provider, ${name} variant: ${variant.description}";
                  mainProgram = exe;
                };
              }
              ''
                mkdir -p $out/bin
                makeWrapper ${plugin}/bin/qntx-python-plugin $out/bin/${exe} \
                  --add-flags "--name ${name} --python-env ${env} --variant ${variant.path}"
              '';

          variantPackages = lib.mapAttrs' (
            name: variant: lib.nameValuePair "qntx-${name}-plugin" (mkVariant name variant)
          ) variants;
          packages = variantPackages // {
            default = plugin;
            qntx-python-plugin = plugin;
          };

          devTools = [
            pkgs.cargo
            pkgs.rustc
            pkgs.clippy
            pkgs.rustfmt
            pkgs.rust-analyzer
            pkgs.protobuf
            pkgs.pkg-config
            python
          ];
          devEnv = {
            PYO3_PYTHON = python.interpreter;
            PROTOC = "${pkgs.protobuf}/bin/protoc";
          };
        in
        {
          inherit packages;

          devShells =
            lib.mapAttrs (
              name: variant:
              let
                pkg = variantPackages."qntx-${name}-plugin";
              in
              pkgs.mkShell (
                devEnv
                // {
                  packages = devTools ++ [ pkg.env ];
                  QNTX_PYTHON_ENV = "${pkg.env}";
                  QNTX_VARIANT = "${variant.path}";
                }
              )
            ) variants
            // {
              default = pkgs.mkShell (devEnv // { packages = devTools; });
            };

          checks =
            {
              package = plugin;

              # Unit tests only (--lib --bins): the integration tests in tests/ start the binary
              # against a fake host and real venvs, which the build sandbox does not provide.
              tests = pkgs.rustPlatform.buildRustPackage (
                rustArgs
                // {
                  pname = "qntx-python-plugin-tests";
                  src = checkSrc;
                  cargoTestFlags = [
                    "--lib"
                    "--bins"
                  ];
                }
              );

              clippy = pkgs.rustPlatform.buildRustPackage (
                rustArgs
                // {
                  pname = "qntx-python-plugin-clippy";
                  src = checkSrc;
                  nativeBuildInputs = rustArgs.nativeBuildInputs ++ [ pkgs.clippy ];
                  buildPhase = "cargo clippy --offline --all-targets -- -D warnings";
                  doCheck = false;
                  installPhase = "touch $out";
                }
              );

              fmt =
                pkgs.runCommand "qntx-python-plugin-fmt"
                  {
                    nativeBuildInputs = [
                      pkgs.cargo
                      pkgs.rustfmt
                    ];
                  }
                  ''
                    cd ${checkSrc}
                    HOME=$TMPDIR cargo fmt --all -- --check
                    touch $out
                  '';
            }
            # Smoke: each wrapped variant imports all its packages (`--check-environment`).
            // lib.mapAttrs' (
              exe: pkg:
              lib.nameValuePair "smoke-${lib.removeSuffix "-plugin" (lib.removePrefix "qntx-" exe)}" (
                pkgs.runCommand "${exe}-smoke" { } ''
                  ${pkg}/bin/${exe} --check-environment | tee $out
                ''
              )
            ) (removeAttrs packages [ "default" ]);

          apps = lib.mapAttrs (_: pkg: {
            type = "app";
            program = "${pkg}/bin/${pkg.meta.mainProgram}";
          }) packages;
        };

      outputs = forAllSystems perSystem;
    in
    {
      packages = lib.mapAttrs (_: o: o.packages) outputs;
      devShells = lib.mapAttrs (_: o: o.devShells) outputs;
      checks = lib.mapAttrs (_: o: o.checks) outputs;
      apps = lib.mapAttrs (_: o: o.apps) outputs;
    };
}
