//! A full disk (issue 7, item 2), through the real binary on a small tmpfs mounted for the
//! test: writes answer 507 `insufficient_storage` and leave nothing behind, reads keep
//! answering and their audit events are still written (into the audit reserve), and writes
//! resume on their own once space returns.
//!
//! Mounting needs root (or `CAP_SYS_ADMIN`), as on the CI machine; without it the test fails
//! with a message saying so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tresor_test_support::server::{TestServer, free_port};

fn bin() -> &'static Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

/// A tmpfs of `mib` MiB, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u32) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it and needs root (or CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the file system of `dir` with a file until no byte more fits; answers the file.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // The last partial page, byte by byte.
    while let Ok(1) = f.write(&[0xa5]) {}
    let _ = f.sync_all();
    path
}

fn put(value: &str) -> Value {
    json!({ "value": value })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_answer_507_reads_go_on_audited_and_writes_resume() {
    let fs = Tmpfs::mount(24);
    let data = fs.path().join("data");
    let admin = "disk-full-admin-0123456789abcdef0123456789abcdef";
    let args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{}", free_port()),
        "--data-dir".into(),
        data.display().to_string(),
        "--audit-reserve-mib".into(),
        "2".into(),
    ];
    let mut s =
        TestServer::start_exact(bin(), &args, &[("TRESOR_ADMIN_TOKEN", admin)], Some(admin)).await;
    let t = s.install("app", &["storage:app"], "acct", "inst").await;
    let big = "v".repeat(4000);
    for i in 0..10 {
        let r = s
            .call("PUT", &format!("/v1/kv/k{i}"), Some(&t), Some(&put(&big)))
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    assert!(
        data.join("audit.reserve")
            .metadata()
            .expect("reserve")
            .len()
            == 2 << 20,
        "the reserve is set aside at start"
    );

    // The disk fills up.
    let filler = fill(fs.path());
    let mut refused = 0;
    for i in 0..200 {
        let r = s
            .call(
                "PUT",
                &format!("/v1/kv/full{i}"),
                Some(&t),
                Some(&put(&big)),
            )
            .await;
        match r.status {
            201 => continue,
            507 => {
                assert_eq!(r.code(), Some("insufficient_storage"), "{:?}", r.body);
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
            other => panic!("a write on a full disk answered {other}: {:?}", r.body),
        }
    }
    assert_eq!(refused, 3, "writes are refused once the disk is full");
    let r = s.call("GET", "/metrics", None, None).await;
    assert!(
        r.text.contains("tresor_sqlite_disk_full 1\n"),
        "the gauge shows it"
    );

    // Reads go on, and their audit events still reach the log (the reserve holds them).
    for round in 0..50 {
        let r = s
            .call("GET", &format!("/v1/kv/k{}", round % 10), Some(&t), None)
            .await;
        assert_eq!(r.status, 200, "a read on a full disk: {:?}", r.body);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s
            .admin(
                "GET",
                "/v1/admin/audit?installation_id=inst&limit=1000",
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let reads = r.body["items"]
            .as_array()
            .map(|evs| {
                evs.iter()
                    .filter(|e| e["operation"] == "get" && e["store"] == "kv")
                    .count()
            })
            .unwrap_or(0);
        if reads >= 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {reads} of 50 reads audited on the full disk: {}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still full: a write is refused, and a refused write left nothing.
    let r = s
        .call("PUT", "/v1/kv/refused", Some(&t), Some(&put("x")))
        .await;
    assert_eq!(r.status, 507);
    let r = s.call("GET", "/v1/kv/refused", Some(&t), None).await;
    assert_eq!(r.status, 404);

    // Space returns: writes resume on their own.
    std::fs::remove_file(&filler).expect("remove the filler");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = s
            .call("PUT", "/v1/kv/after", Some(&t), Some(&put("back")))
            .await;
        if r.status == 201 {
            break;
        }
        assert_eq!(r.status, 507, "{:?}", r.body);
        assert!(
            Instant::now() < deadline,
            "writes did not resume: {}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = s.call("GET", "/v1/kv/after", Some(&t), None).await;
    assert_eq!(r.body["value"], "back");
    let r = s.call("GET", "/metrics", None, None).await;
    assert!(r.text.contains("tresor_sqlite_disk_full 0\n"));
    assert_eq!(
        data.join("audit.reserve")
            .metadata()
            .expect("reserve")
            .len(),
        2 << 20,
        "the reserve is taken back"
    );
    assert!(
        s.log().contains("the disk is full"),
        "the operator is told: {}",
        s.log()
    );
    assert_eq!(s.terminate(), Some(0));
}
