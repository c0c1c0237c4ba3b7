//! Runs the backend conformance suite, unchanged, against [`PostgresBackend`]: each case on a
//! fresh database of the throwaway PostgreSQL server that test support starts (or of the server
//! `TRESOR_TEST_DATABASE_URL` names), migrated as a server would at start.

use tresor_backend_postgres::{PostgresBackend, PostgresOptions};
use tresor_test_support::conformance::Fixture;

async fn make() -> Fixture<PostgresBackend> {
    let url = tresor_test_support::postgres::fresh_database().await;
    let backend = PostgresBackend::connect(&url, PostgresOptions::default())
        .await
        .expect("connect to the throwaway database");
    backend.migrate().await.expect("migrate");
    Fixture::new(backend)
}

tresor_test_support::conformance_tests!(make);

/// The single-test entry point runs too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_in_one_test() {
    tresor_test_support::conformance::run_all(make).await;
}
