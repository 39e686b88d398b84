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
        # Deprecated in nixpkgs 26.05 and dropped after it: when flake.lock moves past 26.05,
        # delete this line (tests/nix/check-flake.sh accepts the list with or without it).
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
          isBool = key: x: builtins.isBool (x.${key} or true);
        in
        assert lib.assertMsg (variant.name or null == name)
          "variants/${file}: name must be \"${name}\" (its file name)";
        assert lib.assertMsg (isBool "smoke-in-flake-check" variant)
          "variants/${file}: smoke-in-flake-check must be true or false";
        assert lib.assertMsg (builtins.all (isBool "check") (variant.packages or [ ]))
          "variants/${file}: a package's check must be true or false";
        lib.nameValuePair name (variant // { inherit path; })
      ) (lib.filterAttrs (file: type: type == "regular" && lib.hasSuffix ".toml" file) (builtins.readDir ./variants));

      # The environment a run without a `# py:<env>` line goes to, in the `python` provider.
      defaultEnv = "data";
      assertDefaultEnv = lib.assertMsg (variants ? ${defaultEnv})
        "defaultEnv \"${defaultEnv}\" is not a file in variants/";

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

          # The Rust build: the only one; every package below wraps it. Alone (with python313's
          # standard library) it is `qntx-python-plugin-unwrapped`. Its tests run in checks.tests,
          # so editing a test never rebuilds it.
          plugin = pkgs.rustPlatform.buildRustPackage (
            rustArgs
            // {
              doCheck = false;
              passthru = { inherit python; };
            }
          );

          # The interpreter a variant's environment is built from: `python` itself, unless the
          # variant switches off the test suite of some package (`check = false`). Then that
          # package is overridden in this interpreter's package set (`packageOverrides`), so every
          # package that depends on it gets the same build. Python packages run their tests in
          # installCheckPhase, which `doCheck` of `overridePythonAttrs` controls (`overrideAttrs`
          # would not). The interpreter's derivation is unchanged: only its package set differs.
          pythonFor =
            variant:
            let
              unchecked = builtins.filter (p: !(p.check or true)) (variant.packages or [ ]);
              packageOverrides =
                _: super:
                lib.listToAttrs (
                  map (
                    p: lib.nameValuePair p.nix (super.${p.nix}.overridePythonAttrs (_: { doCheck = false; }))
                  ) unchecked
                );
              overridden = python.override {
                inherit packageOverrides;
                self = overridden;
              };
            in
            if unchecked == [ ] then python else overridden;

          # A variant's environment: its interpreter with exactly the packages its file lists.
          envFor = variant: (pythonFor variant).withPackages (ps: map (p: ps.${p.nix}) variant.packages);
          envs = lib.mapAttrs (_: envFor) variants;

          # Runs `exe --check-environment` (every package of every environment imports).
          smokeTest =
            exe: command:
            pkgs.runCommand "${exe}-smoke" { } ''
              ${command} --check-environment | tee $out
            '';

          # A variant: the same binary, wrapped with its environment and its name. Costs seconds.
          mkVariant =
            name: variant:
            let
              exe = "qntx-${name}-plugin";
              self = pkgs.runCommand exe {
                nativeBuildInputs = [ pkgs.makeWrapper ];
                passthru = {
                  inherit variant;
                  env = envs.${name};
                  unwrapped = plugin;
                  tests.smoke = smokeTest exe "${self}/bin/${exe}";
                };
                meta = plugin.meta // {
                  description = "QNTX's Python provider, ${name} variant: ${variant.description}";
                  mainProgram = exe;
                };
              } ''
                mkdir -p $out/bin
                makeWrapper ${plugin}/bin/qntx-python-plugin $out/bin/${exe} \
                  --add-flags "--name ${name} --python-env ${envs.${name}} --variant ${variant.path}"
              '';
            in
            self;

          # The flags that make the one binary serve the environments `names` as the `python`
          # provider: `--env` and `--variant NAME=FILE` per environment, the default if it is one
          # of them (otherwise the binary takes the first).
          providerFlags =
            names:
            lib.concatStringsSep " " (
              [ "--name python" ]
              ++ map (n: "--env ${n}=${envs.${n}}") names
              ++ lib.optional (builtins.elem defaultEnv names) "--default-env ${defaultEnv}"
              ++ map (n: "--variant ${n}=${variants.${n}.path}") names
            );

          # The `python` provider: every variant's environment in one process, routed
          # by a `# py:<env>` line. The host keeps one Python-provider slot, so this is the one
          # to install; the variant files stay the only source of each environment.
          provider = assert assertDefaultEnv;
            let
              self = pkgs.runCommand "qntx-python-plugin" {
                nativeBuildInputs = [ pkgs.makeWrapper ];
                passthru = {
                  inherit envs defaultEnv;
                  unwrapped = plugin;
                  tests.smoke = smokeTest "qntx-python-plugin" "${self}/bin/qntx-python-plugin";
                };
                meta = plugin.meta // {
                  description = "QNTX's Python provider with the environments ${lib.concatStringsSep ", " (lib.attrNames variants)}, routed by '# py:<env>'";
                  mainProgram = "qntx-python-plugin";
                };
              } ''
                mkdir -p $out/bin
                makeWrapper ${plugin}/bin/qntx-python-plugin $out/bin/qntx-python-plugin \
                  --add-flags "${providerFlags (lib.attrNames variants)}"
              '';
            in
            self;

          # What `nix flake check` runs a smoke test for. A variant whose file says
          # `smoke-in-flake-check = false` (ml: torch is large) is opt-in: its test is
          # `nix build .#qntx-<variant>-plugin.tests.smoke` (and the provider's, .#default.tests.smoke).
          flakeChecked = lib.filterAttrs (_: v: v.smoke-in-flake-check or true) variants;

          variantPackages = lib.mapAttrs' (
            name: variant: lib.nameValuePair "qntx-${name}-plugin" (mkVariant name variant)
          ) variants;
          packages = variantPackages // {
            default = provider;
            qntx-python-plugin = provider;
            # The Rust build alone: python313's standard library, no environment.
            qntx-python-plugin-unwrapped = plugin;
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
          # `cargo build` in the shell links target/ binaries to python313 (and runs them with the
          # variant's environment), and nothing keeps those alive: `nix-collect-garbage` would
          # delete them and the binaries would no longer start. So the shell registers them as GC
          # roots under .nix-gc-roots/ (git-ignored; delete it to let them go).
          # QNTX_NO_GC_ROOTS=1 skips this.
          gcRootsHook =
            paths:
            ''
              if [ -z "''${QNTX_NO_GC_ROOTS-}" ] && [ -f Cargo.toml ] && command -v nix-store >/dev/null; then
                for path in ${lib.concatStringsSep " " (map toString paths)}; do
                  nix-store --add-root ".nix-gc-roots/''${path#/nix/store/}" --realise "$path" >/dev/null \
                    || echo "qntx dev shell: could not make $path a GC root" >&2
                done
              fi
            '';
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
                  shellHook = gcRootsHook [
                    python
                    pkg.env
                  ];
                }
              )
            ) variants
            // {
              default = pkgs.mkShell (
                devEnv
                // {
                  packages = devTools;
                  shellHook = gcRootsHook [ python ];
                }
              );
            };

          checks =
            {
              package = plugin;

              # How the binary finds libpython at run time, checked on the built file. Linux: the
              # linker wrapper put python313's lib/ in the RUNPATH. Darwin: no rpath is needed,
              # because the binary names libpython by its absolute store path (the install name
              # nixpkgs' python313 gives its dylib); an @rpath reference would not be found.
              linkage =
                let
                  bin = "${plugin}/bin/qntx-python-plugin";
                  lib' = "${python}/lib";
                in
                if pkgs.stdenv.hostPlatform.isDarwin then
                  pkgs.runCommand "qntx-python-plugin-linkage" { nativeBuildInputs = [ pkgs.cctools ]; } ''
                    otool -L ${bin} | tee $out
                    grep -F "${lib'}/libpython${python.pythonVersion}.dylib" $out
                    if grep -F "@rpath/libpython" $out; then
                      echo "libpython is referenced through @rpath, which the binary does not set" >&2
                      exit 1
                    fi
                  ''
                else
                  pkgs.runCommand "qntx-python-plugin-linkage" { nativeBuildInputs = [ pkgs.patchelf ]; } ''
                    { patchelf --print-needed ${bin}; patchelf --print-rpath ${bin} | tr : '\n'; } | tee $out
                    grep -Fx "libpython${python.pythonVersion}.so.1.0" $out
                    grep -Fx "${lib'}" $out
                  '';

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

              # Warnings are reported, not fatal: nixpkgs' clippy moves with flake.lock and brings new
              # lints, which must not break `nix flake check` for code that did not change.
              # .ci/run denies warnings with its own, pinned toolchain.
              clippy = pkgs.rustPlatform.buildRustPackage (
                rustArgs
                // {
                  pname = "qntx-python-plugin-clippy";
                  src = checkSrc;
                  nativeBuildInputs = rustArgs.nativeBuildInputs ++ [ pkgs.clippy ];
                  buildPhase = "cargo clippy --offline --all-targets";
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
            # Smoke: each wrapped variant imports all its packages (`--check-environment`), except
            # the opt-in ones (see flakeChecked).
            // lib.mapAttrs' (
              name: _: lib.nameValuePair "smoke-${name}" variantPackages."qntx-${name}-plugin".tests.smoke
            ) flakeChecked
            // {
              # The provider's flags, with the environments `nix flake check` builds.
              smoke-python = smokeTest "qntx-python-plugin" "${plugin}/bin/qntx-python-plugin ${providerFlags (lib.attrNames flakeChecked)}";
            };

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
