//! The backend conformance suite: what every [`Backend`] must do, as generic async cases that run
//! unchanged against SQLite, PostgreSQL and any later engine (as Quickwit runs one metastore
//! suite against its file and Postgres metastores), plus a property test that compares random
//! operation sequences against an in-memory model.
//!
//! A backend's test file invokes [`conformance_tests!`](crate::conformance_tests) with an async
//! factory returning a fresh [`Fixture`]; the macro expands to one test per case, so a failure
//! names its case. [`run_all`] runs every case in one test instead.
//!
//! Every case takes a fresh, empty backend; a case panics (through `assert!`) when the backend
//! breaks the contract. The few *pair cases* (after `pairs:` in the list) take two fresh
//! backends from the same factory: an export from one imported into the other.

mod admin;
mod audit;
mod credentials;
mod dump;
mod flows;
mod helpers;
mod model;
mod records;
mod rekey;

use std::any::Any;
use std::future::Future;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use tresor_core::backend::Backend;

pub use admin::*;
pub use audit::*;
pub use credentials::*;
pub use dump::*;
pub use flows::*;
pub use model::{ModelExpect, ModelOp, check_against_model, model_property};
pub use records::*;
pub use rekey::*;

/// A backend under test and whatever must live as long as it (its temporary directory, its
/// throwaway database server). The backend is dropped first.
pub struct Fixture<B> {
    pub backend: B,
    _keep: Option<Box<dyn Any + Send + Sync>>,
}

impl<B> Fixture<B> {
    pub fn new(backend: B) -> Fixture<B> {
        Fixture {
            backend,
            _keep: None,
        }
    }

    /// Keeps `guard` alive (and drops it after the backend).
    pub fn with_guard(backend: B, guard: impl Any + Send + Sync) -> Fixture<B> {
        Fixture {
            backend,
            _keep: Some(Box::new(guard)),
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance case plus the model property test, each on a
/// fresh fixture from `$make` (an async function or closure returning a [`Fixture`]; a pair
/// case gets two). The calling crate needs `tokio` (with `macros` and `rt-multi-thread`) as a
/// dev-dependency.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@list [@cases $make]);
    };
    // The one list of cases: both the per-case tests and `run_all` expand it.
    (@list [$($then:tt)*]) => {
        $crate::conformance_tests!($($then)*;
            meta_get_or_insert_keeps_the_first_value,
            wrapped_keys_are_replaced_by_compare_and_set,
            put_then_read_round_trips,
            stores_and_namespaces_are_separate,
            versions_always_increase,
            failed_precondition_applies_nothing,
            later_mutations_see_earlier_ones,
            missing_guard_applies_nothing,
            expired_records_disappear,
            expiry_keep_and_clear,
            put_over_expired_record_is_a_create,
            description_keep_and_set,
            delete_removes_a_record,
            list_is_in_byte_order,
            list_prefix_cursor_and_limit,
            put_app_creates_then_updates,
            put_account_creates_then_updates,
            install_outcomes,
            authenticate_joins_installation_and_app,
            uninstall_removes_records_tokens_and_key,
            reinstall_starts_empty,
            delete_app_removes_installations_and_shared_store,
            delete_account_removes_its_installations,
            tokens_create_and_revoke,
            audit_of_writes_commits_with_them,
            audit_enqueue_becomes_queryable,
            audit_filters_and_paging,
            purge_expired_removes_expired_rows,
            purge_audit_removes_old_events,
            credential_put_then_read_round_trips,
            credential_versions_share_the_record_counter,
            credential_preconditions,
            credential_key_space_is_shared_with_the_other_owner,
            read_credential_follows_namespace_order,
            list_credentials_merges_namespaces_in_byte_order,
            expired_credentials_disappear,
            delete_credential_removes_it,
            credential_commits_need_their_guards,
            uninstall_removes_installation_credentials_only,
            delete_account_removes_account_credentials,
            delete_app_removes_its_installations_credentials,
            authenticate_returns_the_account_namespace,
            providers_create_update_get_list_delete,
            provider_client_secret_is_kept_replaced_or_cleared,
            purge_expired_removes_expired_credentials,
            flow_put_then_read_round_trips,
            flow_ids_and_states_are_unique,
            finish_flow_once_while_pending,
            take_flow_token_once,
            credential_lease_is_a_compare_and_set,
            uninstall_removes_installation_flows,
            deleting_an_app_or_account_removes_its_flows,
            purge_expired_keeps_flows_a_day_past_expiry,
            nodes_register_list_and_unregister,
            rekey_swaps_every_sealed_row_and_the_key_at_once,
            rekey_fence_holds_off_the_namespace_commits_only,
            rekey_swap_that_lost_a_race_changes_nothing,
            import_of_an_existing_key_conflicts_and_inserts_nothing;
            pairs:
            export_then_import_round_trips,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?; pairs: $($pair:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let make = $make;
                let fixture = make().await;
                $crate::conformance::$case(&fixture.backend).await;
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $pair() {
                let make = $make;
                let (first, second) = (make().await, make().await);
                $crate::conformance::$pair(&first.backend, &second.backend).await;
            }
        )*

        #[test]
        fn model_property() {
            $crate::conformance::model_property($make);
        }
    };
    (@run $make:expr; $($case:ident),* $(,)?; pairs: $($pair:ident),* $(,)?) => {
        $( $crate::conformance::$case(&$make().await.backend).await; )*
        $({
            let (first, second) = ($make().await, $make().await);
            $crate::conformance::$pair(&first.backend, &second.backend).await;
        })*
    };
}

/// Runs every case, each on a fresh fixture, and a short deterministic run of the model check.
pub async fn run_all<B, F, Fut>(make: F)
where
    B: Backend,
    F: Fn() -> Fut,
    Fut: Future<Output = Fixture<B>>,
{
    crate::conformance_tests!(@list [@run make]);
    let fixture = make().await;
    let mut runner = TestRunner::deterministic();
    let strategy = model::model_ops();
    for _ in 0..16 {
        let ops = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree.current(),
            Err(e) => panic!("cannot generate a model case: {e}"),
        };
        if let Err(e) = check_against_model(&fixture.backend, model::fresh_model_ns(), &ops).await {
            panic!("model check failed: {e}\nops: {ops:#?}");
        }
    }
}
