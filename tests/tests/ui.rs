//! Compile-time diagnostics of the macros (trybuild): each `fail` case must fail with the
//! committed `.stderr`, each `pass` case must compile and run.
//! The cases live in `tests/ui/<macro>/{pass,fail}/` of this package. Regenerate the `.stderr` files with `TRYBUILD=overwrite`, then read every one.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*/fail/*.rs");
    cases.pass("ui/*/pass/*.rs");
}
