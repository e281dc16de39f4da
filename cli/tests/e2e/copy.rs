//! `docker-agent cp` both ways against a real agent: a 100 MB file arrives byte for byte, a directory tree keeps its modes and links, and bad paths are refused.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::Hub;

fn sha256_local(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[tokio::test(flavor = "multi_thread")]
async fn cp_streams_files_and_directories_both_ways() {
    let hub = Hub::builder().start().await;
    let name = hub.name("cp");
    hub.create(&name).await;
    let local = tempfile::tempdir().unwrap();

    let big = local.path().join("big.bin");
    let mut data = Vec::new();
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(100 << 20)
        .read_to_end(&mut data)
        .unwrap();
    std::fs::write(&big, &data).unwrap();
    drop(data);
    let want = sha256_local(&big);
    let remote = format!("{name}:/workspace/big.bin");
    hub.cli(&["cp", big.to_str().unwrap(), &remote]).await.ok();
    let inside = hub
        .sh(
            &name,
            "sha256sum /workspace/big.bin; stat -c %U /workspace/big.bin",
        )
        .await;
    assert_eq!(inside, format!("{want}  /workspace/big.bin\nagent\n"));
    let back = local.path().join("back.bin");
    hub.cli(&["cp", &remote, back.to_str().unwrap()]).await.ok();
    assert_eq!(sha256_local(&back), want);

    // A tree with modes and a link, into an existing directory (it lands under its own name).
    let tree = local.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), "a\n").unwrap();
    std::fs::write(tree.join("sub/run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::os::unix::fs::symlink("a.txt", tree.join("link")).unwrap();
    std::fs::set_permissions(tree.join("a.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(
        tree.join("sub/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(tree.join("sub"), std::fs::Permissions::from_mode(0o750)).unwrap();
    hub.cli(&["cp", tree.to_str().unwrap(), &format!("{name}:/workspace")])
        .await
        .ok();
    assert_eq!(
        hub.sh(
            &name,
            "cd /workspace/tree && stat -c '%a %U %n' a.txt sub sub/run.sh && readlink link && sub/run.sh"
        )
        .await,
        "640 agent a.txt\n750 agent sub\n755 agent sub/run.sh\na.txt\nran\n"
    );
    // And back out under a new name.
    let out = local.path().join("out");
    hub.cli(&["cp", &format!("{name}:tree"), out.to_str().unwrap()])
        .await
        .ok();
    assert_eq!(mode(&out.join("a.txt")), 0o640);
    assert_eq!(mode(&out.join("sub")), 0o750);
    assert_eq!(mode(&out.join("sub/run.sh")), 0o755);
    assert_eq!(
        std::fs::read_link(out.join("link")).unwrap(),
        Path::new("a.txt")
    );
    assert_eq!(
        std::fs::read_to_string(out.join("sub/run.sh")).unwrap(),
        "#!/bin/sh\necho ran\n"
    );

    hub.cli(&[
        "cp",
        &format!("{name}:/workspace/nope"),
        out.to_str().unwrap(),
    ])
    .await
    .fails_with("no such file or directory");
    hub.cli(&["cp", big.to_str().unwrap(), back.to_str().unwrap()])
        .await
        .fails_with("exactly one side");
    hub.cli(&["cp", big.to_str().unwrap(), &format!("{name}:/nodir/x")])
        .await
        .fails_with("no such directory");
    hub.cli(&[
        "cp",
        big.to_str().unwrap(),
        &format!("{name}:/workspace/../etc/x"),
    ])
    .await
    .fails_with("must not contain '..'");
}
