//! Unit tests of profile parsing and validation: every field, the seed's JSON, and the errors.

use super::*;
use crate::profile::parse_size;
use crate::profile::raw::Scalar;
use crate::profile::validate::parse_mode;
use crate::profile::{FileOwner, MountKind};

fn toml_err(text: &str) -> String {
    parse(text, Format::Toml, "p.toml").unwrap_err().to_string()
}

#[test]
fn sizes() {
    assert_eq!(parse_size("512m").unwrap(), 512 << 20);
    assert_eq!(parse_size("4g").unwrap(), 4 << 30);
    assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
    assert_eq!(parse_size("1000").unwrap(), 1000);
    assert!(parse_size("4x").unwrap_err().contains("unknown unit"));
    assert!(parse_size("lots").is_err());
    assert!(parse_size("0").is_err());
    // Exact past 2^53 (an f64 would round), and nothing that would wrap negative in Docker's i64.
    assert_eq!(parse_size("9007199254740993").unwrap(), 9007199254740993);
    assert!(parse_size("20000000t").unwrap_err().contains("too large"));
    assert!(
        parse_size("9223372036854775808")
            .unwrap_err()
            .contains("too large")
    );
}

#[test]
fn every_field_parses() {
    let p = parse(
        r##"
name = "full"
description = "all of it"
base = "docker-agent/base:custom"
packages = ["git", "build-essential", "git", "python3=3.11.2-1+b1"]
user = "dev"
network = "shared-net"

[environment]
CI = true
JOBS = 4
NODE_ENV = "production"

[resources]
cpus = 1.5
memory = "512m"
pids = 256

[[files]]
path = "/home/dev/.config//tool.conf"
content = "x=1\n"
mode = "0600"

[[files]]
path = "/usr/local/bin/hello"
content = "#!/bin/sh\necho hi\n"
mode = "755"
owner = "root"

[[setup_tasks]]
command = "git config --global init.defaultBranch main"
description = "git defaults"
timeout = "2m"

[[setup_tasks]]
command = "apt-get --version"
user = "root"

[[mounts]]
source = "/srv/cache"
target = "/cache"
read_only = true

[[mounts]]
type = "volume"
source = "shared-cache"
target = "/shared"
"##,
        Format::Toml,
        "full.toml",
    )
    .unwrap();
    assert_eq!(
        p.packages,
        ["git", "build-essential", "python3=3.11.2-1+b1"]
    );
    assert_eq!(p.environment["CI"], "true");
    assert_eq!(p.environment["JOBS"], "4");
    assert_eq!((p.cpus, p.memory_bytes, p.pids), (1.5, 512 << 20, 256));
    assert_eq!(p.files[0].path, "/home/dev/.config/tool.conf");
    assert_eq!(p.files[0].mode, 0o600);
    assert_eq!(p.files[1].mode, 0o755);
    assert_eq!(p.files[1].owner, Some(FileOwner::Root));
    assert_eq!(p.setup_tasks[0].timeout, Some(Duration::from_secs(120)));
    assert_eq!(p.setup_tasks[1].user.as_deref(), Some("root"));
    assert_eq!(p.mounts[0].kind, MountKind::Bind);
    assert!(p.mounts[0].read_only);
    assert_eq!(p.mounts[1].kind, MountKind::Volume);
    assert_eq!(p.user, "dev");
    assert_eq!(p.network.as_deref(), Some("shared-net"));
}

#[test]
fn the_seed_json_shape_is_accepted() {
    let p = parse(
            r#"{
  "name": "builder",
  "description": "Build agent for Node.js projects",
  "resources": { "cpus": "2", "memory": "4g" },
  "environment": { "NODE_ENV": "production", "CI": "true" },
  "packages": ["git", "curl", "build-essential"],
  "setup_tasks": [
    { "type": "exec", "command": "npm install -g yarn pnpm", "description": "Install package managers" }
  ]
}"#,
            Format::Json,
            "builder.json",
        )
        .unwrap();
    assert_eq!(p.cpus, 2.0);
    assert_eq!(p.memory_bytes, 4 << 30);
    assert_eq!(p.setup_tasks[0].description, "Install package managers");
    assert_eq!(p.user, "agent");
}

#[test]
fn errors_name_the_file_the_field_and_the_line() {
    let err = toml_err("name = \"x\"\nbogus = 1\n");
    assert!(err.starts_with("profile p.toml: "), "{err}");
    assert!(err.contains("unknown field `bogus`"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    let err = toml_err("name = \"x\"\n[resources]\nmemory = \"4q\"\n");
    assert!(err.contains("field `resources.memory`"), "{err}");
    assert!(err.contains("unknown unit"), "{err}");
    let err = toml_err("name = \"x\"\n[resources]\ncpus = -1\n");
    assert!(err.contains("field `resources.cpus`"), "{err}");
    let err = toml_err("name = \"x\"\n[resources]\ncpus = \"lots\"\n");
    assert!(err.contains("field `resources.cpus`"), "{err}");
    let err = toml_err("description = \"no name\"\n");
    assert!(err.contains("field `name` is missing"), "{err}");
    let err = toml_err("name = \"x\"\n[[files]]\npath = \"/a\"\ncontent = \"\"\nmodee = 1\n");
    assert!(err.contains("field `files[0]"), "{err}");
    assert!(err.contains("modee"), "{err}");
    let err = toml_err("name = \"x\"\npackages = [\"Not A Package\"]\n");
    assert!(err.contains("field `packages[0]`"), "{err}");
    let err = toml_err("name = \"x\"\n[[mounts]]\nsource = \"rel\"\ntarget = \"/x\"\n");
    assert!(err.contains("field `mounts[0].source`"), "{err}");
    let err = toml_err("name = \"x\"\n[[mounts]]\nsource = \"/a\"\ntarget = \"/workspace\"\n");
    assert!(err.contains("docker-agent owns"), "{err}");
    let err = toml_err("name = \"x\"\n[[mounts]]\nsource = \"/a\"\ntarget = \"/usr/local/bin\"\n");
    assert!(err.contains("docker-agent owns"), "{err}");
    let err = toml_err(
        "name = \"x\"\n[[files]]\npath = \"/usr/local/bin/docker-agent-agent\"\ncontent = \"\"\n",
    );
    assert!(err.contains("docker-agent owns"), "{err}");
    let err = toml_err("name = \"x\"\n[resources]\ncpus = [2]\n");
    assert!(err.contains("a string, a number or a boolean"), "{err}");
    let err = toml_err("name = \"x\"\n[environment]\nDOCKER_AGENT_X = \"1\"\n");
    assert!(err.contains("reserved"), "{err}");
    let err = toml_err("name = \"x\"\n[[setup_tasks]]\ncommand = \"true\"\ntimeout = \"soon\"\n");
    assert!(err.contains("field `setup_tasks[0].timeout`"), "{err}");
    let err = toml_err("name = [\n");
    assert!(err.contains("not valid TOML"), "{err}");
}

#[test]
fn json_errors_name_the_field_and_line_and_refuse_integer_modes() {
    let err = parse(
        "{\"name\": \"x\",\n \"files\": [{\"path\": \"/a\", \"content\": \"\", \"mode\": 644}]}",
        Format::Json,
        "x.json",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("field `files[0].mode`"), "{err}");
    assert!(err.contains("octal string"), "{err}");
    let err = parse("{\"name\": \"x\",\n \"colour\": 1}", Format::Json, "x.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `colour`"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn modes() {
    assert_eq!(parse_mode(&Scalar::Text("0644".into())), Ok(0o644));
    assert_eq!(parse_mode(&Scalar::Text("0o755".into())), Ok(0o755));
    assert!(parse_mode(&Scalar::Text("0999".into())).is_err());
    assert!(parse_mode(&Scalar::Int(0o644)).is_err());
    assert!(parse_mode(&Scalar::Text("17777".into())).is_err());
}

#[test]
fn a_read_only_root_takes_files_only_under_the_workspace_and_round_trips() {
    let text = "name = \"ro\"\nread_only_root = true\n[[files]]\npath = \"/workspace/.env\"\ncontent = \"A=1\"\n";
    let p = parse(text, Format::Toml, "ro.toml").unwrap();
    assert!(p.read_only_root);
    assert!(p.to_toml().contains("read_only_root = true"));
    assert_eq!(parse(&p.to_json(), Format::Json, "ro.json").unwrap(), p);
    let err = toml_err(
        "name = \"ro\"\nread_only_root = true\n[[files]]\npath = \"/home/agent/.npmrc\"\ncontent = \"\"\n",
    );
    assert!(
        err.contains("field `files[0].path`") && err.contains("outside /workspace"),
        "{err}"
    );
    let err = toml_err("name = \"ro\"\nread_only_root = \"yes\"\n");
    assert!(err.contains("read_only_root"), "{err}");
    // Off unless asked for, and then not written out.
    let p = parse("name = \"rw\"\n", Format::Toml, "rw.toml").unwrap();
    assert!(!p.read_only_root && !p.to_toml().contains("read_only_root"));
}

#[test]
fn hostile_profile_texts_are_refused_with_one_line() {
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_toml = format!("name = {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let huge_name = format!("name = \"{}\"\n", "a".repeat(1 << 20));
    let cases = [
        (deep_json.as_str(), Format::Json),
        (deep_toml.as_str(), Format::Toml),
        (huge_name.as_str(), Format::Toml),
        ("name = 7\n", Format::Toml),
        (
            "{\"name\": \"x\", \"resources\": {\"pids\": \"many\"}}",
            Format::Json,
        ),
        ("name = \"x\"\n[resources]\ncolour = 1\n", Format::Toml),
        ("name = \"x\"\npackages = \"git\"\n", Format::Toml),
        ("\u{0}\u{1}\u{2}", Format::Toml),
    ];
    for (text, format) in cases {
        let err = parse(text, format, "hostile").unwrap_err().to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.len() < 600, "{} bytes: {}", err.len(), &err[..200]);
    }
}

#[test]
fn long_quoted_values_are_cut_whole_escapes_and_all() {
    let long = format!("field `name`: {:?} is bad, not {:?}", "a".repeat(100), "b");
    assert_eq!(
        shorten_quoted(&long),
        format!(
            "field `name`: \"{}… (36 more characters)\" is bad, not \"b\"",
            "a".repeat(64)
        )
    );
    let escaped = format!("{:?}", format!("{}\"{}", "x".repeat(63), "y".repeat(10)));
    let cut = shorten_quoted(&escaped);
    assert!(
        cut.starts_with(&format!("\"{}\\\"…", "x".repeat(63))),
        "{cut}"
    );
    assert_eq!(shorten_quoted("no quotes"), "no quotes");
}

#[test]
fn placement_takes_swarm_constraints_and_names_a_bad_one() {
    let text =
        "name = \"pinned\"\nplacement = [\"node.labels.gpu==true\", \"node.role != manager\"]\n";
    let p = parse(text, Format::Toml, "p.toml").unwrap();
    assert_eq!(
        p.placement,
        ["node.labels.gpu==true", "node.role != manager"]
    );
    assert!(p.to_toml().contains("placement = ["), "{}", p.to_toml());
    for (bad, needle) in [
        ("gpu", "must be KEY==VALUE"),
        ("host==a", "not a Swarm placement attribute"),
        ("node.labels.x==", "needs one value"),
    ] {
        let err = toml_err(&format!("name = \"p\"\nplacement = [\"{bad}\"]\n"));
        assert!(
            err.contains("placement[0]") && err.contains(needle),
            "{bad}: {err}"
        );
    }
}

#[test]
fn a_workspace_volume_driver_round_trips_and_a_bad_one_is_named() {
    let text = "name = \"nfs\"\npackages = [\"git\"]\n[workspace]\ndriver = \"local\"\noptions = { type = \"nfs\", o = \"addr=10.0.0.2,rw\", device = \":/exports/ws\" }\n";
    let p = parse(text, Format::Toml, "p.toml").unwrap();
    let w = p.workspace.clone().unwrap();
    assert_eq!(w.driver, "local");
    assert_eq!(w.options["type"], "nfs");
    assert_eq!(w.options["device"], ":/exports/ws");
    let again = parse(&p.to_toml(), Format::Toml, "again.toml").unwrap();
    assert_eq!(again.workspace, p.workspace, "{}", p.to_toml());
    let err = toml_err("name = \"p\"\n[workspace]\ndriver = \"no pe\"\n");
    assert!(err.contains("workspace.driver"), "{err}");
    let err = toml_err("name = \"p\"\n[workspace]\noptions = {}\n");
    assert!(err.contains("driver"), "{err}");
}
