# A stand-in for nixpkgs, for evaluating the project's flake offline:
#
#   nix eval --override-input nixpkgs path:./tests/nix/stand-in-nixpkgs .#packages ...
#
# It builds nothing. Its "derivations" are attribute sets Nix treats as derivations, carrying the
# arguments the flake passed (`standIn.args`), so tests/nix/check-flake.sh can assert on them.
# It implements only what ../../../flake.nix uses; anything else fails to evaluate, as it should.
{
  description = "Stand-in nixpkgs recording what the flake asks for";

  outputs =
    _:
    let
      lib = import ./lib.nix;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
    in
    {
      inherit lib;
      legacyPackages = lib.genAttrs systems (system: import ./pkgs.nix { inherit lib system; });
    };
}
