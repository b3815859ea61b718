//! Every other test file needs the `testing` feature (the hidden
//! table-server switches, the planted bugs) and compiles to nothing
//! without it, so that `cargo clippy --all-targets` works on a plain build.
//! This one makes a plain `cargo test` fail instead of passing with no
//! tests: run `scripts/test.sh` (or `cargo test --release --features
//! testing`).

#[cfg(not(feature = "testing"))]
#[test]
fn the_tests_need_the_testing_feature() {
    panic!("the tests need the `testing` feature: run scripts/test.sh, or cargo test --release --features testing");
}
