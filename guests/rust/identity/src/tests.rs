#[test]
fn readme_shows_this_source() {
    assert!(include_str!("../README.md").contains(include_str!("lib.rs")));
}
