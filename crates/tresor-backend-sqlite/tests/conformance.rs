//! Runs the backend conformance suite against [`SqliteBackend`], each case on a database in a
//! fresh temporary directory.

use tresor_backend_sqlite::{SqliteBackend, SqliteOptions};
use tresor_test_support::conformance::Fixture;

async fn make() -> Fixture<SqliteBackend> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let backend = SqliteBackend::open(dir.path(), SqliteOptions::default()).expect("open");
    Fixture::with_guard(backend, dir)
}

tresor_test_support::conformance_tests!(make);

/// The single-test entry point that other harnesses may prefer works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_in_one_test() {
    tresor_test_support::conformance::run_all(make).await;
}
