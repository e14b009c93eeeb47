//! The macro that turns the checks into tests, and how each check runs.

use std::future::Future;

use cqrs_actors::TransportHandle;

use super::Names;

/// Generates one `#[actix_rt::test]` per check, each with a fresh transport from `$start` (an
/// async fn returning a [`TransportHandle`]) and queue names starting with `$prefix`.
///
/// With `teardown = $teardown` (an async fn taking `&TransportHandle` and `&Names`), the
/// teardown runs after each check, also when the check failed, so a broker is left clean.
#[macro_export]
macro_rules! conformance_tests {
    ($start:path, $prefix:expr) => {
        $crate::conformance_tests!($start, $prefix, teardown = $crate::conformance::no_teardown);
    };
    ($start:path, $prefix:expr, teardown = $teardown:path) => {
        $crate::conformance_tests!(@each $start, $prefix, $teardown,
            publish_consume, per_key_order, redelivery_after_consumer_crash, requeue_redelivers,
            prefetch_bounds_unacked, delayed_retry, dead_letter_with_reason, directed_routing,
            dead_letters_are_listed_in_place, dead_letters_are_retried_once_after_their_republish,
            dead_letters_are_purged_by_cqrs_id_or_all, describe_queue_shows_what_declare_made,
            delete_queue_refuses_while_messages_remain);
    };
    (@each $start:path, $prefix:expr, $teardown:path, $($check:ident),*) => {
        $(
            #[actix_rt::test]
            async fn $check() {
                let transport = $start().await;
                let names = $crate::conformance::Names::new($prefix, stringify!($check));
                $crate::conformance::run_check(
                    $crate::conformance::$check(&transport, &names),
                    $teardown(&transport, &names),
                )
                .await;
            }
        )*
    };
}

/// Runs a check, then the teardown whatever the check's outcome, then reports the outcome.
pub async fn run_check(check: impl Future<Output = ()>, teardown: impl Future<Output = ()>) {
    use futures_util::FutureExt;
    let outcome = std::panic::AssertUnwindSafe(check).catch_unwind().await;
    teardown.await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The teardown of transports that leave nothing behind.
pub async fn no_teardown(_: &TransportHandle, _: &Names) {}
