# The part of nixpkgs' lib the flake uses, written from its documented behaviour.
let
  inherit (builtins)
    filter
    isAttrs
    isPath
    listToAttrs
    map
    stringLength
    substring
    ;

  nameValuePair = name: value: { inherit name value; };
  mapAttrs' = f: set: listToAttrs (map (name: f name set.${name}) (builtins.attrNames set));

  hasSuffix =
    suffix: s:
    let
      n = stringLength s;
      k = stringLength suffix;
    in
    k <= n && substring (n - k) k s == suffix;
  hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
in
{
  inherit
    nameValuePair
    mapAttrs'
    hasSuffix
    hasPrefix
    ;
  inherit (builtins)
    mapAttrs
    attrNames
    attrValues
    concatStringsSep
    listToAttrs
    ;

  optional = cond: x: if cond then [ x ] else [ ];
  optionalAttrs = cond: set: if cond then set else { };

  genAttrs = names: f: listToAttrs (map (n: nameValuePair n (f n)) names);
  filterAttrs =
    pred: set:
    listToAttrs (
      filter (nv: pred nv.name nv.value) (map (n: nameValuePair n set.${n}) (builtins.attrNames set))
    );
  removeSuffix =
    suffix: s:
    if hasSuffix suffix s then substring 0 (stringLength s - stringLength suffix) s else s;
  removePrefix =
    prefix: s:
    if hasPrefix prefix s then substring (stringLength prefix) (stringLength s) s else s;
  assertMsg = pred: msg: pred || builtins.throw msg;
  importTOML = path: builtins.fromTOML (builtins.readFile path);
  licenses.mit = {
    spdxId = "MIT";
    shortName = "mit";
  };

  # Filesets are recorded, not filtered: `files` lists the paths given, as strings, so a test can
  # see what the Rust build's source holds. Like the real one, only paths or filesets are accepted.
  fileset =
    let
      toFiles =
        x:
        if isPath x then
          [ (toString x) ]
        else if isAttrs x && x._type or null == "fileset" then
          x.files
        else
          throw "lib.fileset (stand-in): expected a path or a file set, got ${builtins.typeOf x}";
    in
    {
      unions = xs: {
        _type = "fileset";
        files = builtins.concatMap toFiles xs;
      };
      toSource =
        { root, fileset }:
        assert isPath root;
        {
          _type = "source";
          root = toString root;
          files = toFiles fileset;
          outPath = "/nix/store/${
            substring 0 32 (builtins.hashString "sha256" (toString (toFiles fileset)))
          }-source";
        };
    };
}
