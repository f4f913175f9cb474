//! Golden tests: descriptions, signatures and fingerprints are a wire contract between
//! builds, so these values must never change.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use procwire_macros::Schema;

use super::*;

#[derive(Schema)]
#[allow(dead_code)]
struct Point {
    x: i64,
    y: i64,
}

#[derive(Schema)]
#[allow(dead_code)]
struct Meters(f64);

#[derive(Schema)]
#[allow(dead_code)]
struct Pair(u8, String);

#[derive(Schema)]
struct Unit;

#[derive(Schema)]
#[allow(dead_code)]
enum Shape {
    Empty,
    Dot(Point),
    Segment(Point, Point),
    Circle { centre: Point, radius: Meters },
}

#[derive(Schema)]
#[allow(dead_code)]
enum Tree<T> {
    Leaf(T),
    Node(Box<Tree<T>>, Box<Tree<T>>),
}

#[derive(Schema)]
#[allow(dead_code)]
struct Forest {
    trees: Vec<Tree<u8>>,
    named: BTreeMap<String, Tree<u8>>,
}

mod elsewhere {
    /// A type of the same structure under another name, in another module.
    #[derive(procwire_macros::Schema)]
    #[allow(dead_code)]
    pub struct Coordinates {
        pub x: i64,
        pub y: i64,
    }
}

fn d<T: Schema + ?Sized>() -> Describe {
    T::describe
}

#[test]
fn standard_types_are_described_by_their_structure() {
    assert_eq!(schema_of::<String>(), "string");
    assert_eq!(schema_of::<std::string::String>(), schema_of::<String>());
    assert_eq!(schema_of::<&str>(), "string");
    assert_eq!(schema_of::<Box<str>>(), "string");
    assert_eq!(schema_of::<usize>(), "u64");
    assert_eq!(schema_of::<Vec<u8>>(), "[u8]");
    assert_eq!(schema_of::<serde_bytes::ByteBuf>(), "[u8]");
    assert_eq!(schema_of::<&[u32]>(), "[u32]");
    assert_eq!(schema_of::<VecDeque<u32>>(), "[u32]");
    assert_eq!(schema_of::<HashSet<u32>>(), "[u32]");
    assert_eq!(schema_of::<[u8; 4]>(), "[u8; 4]");
    assert_eq!(schema_of::<Option<Arc<String>>>(), "option<string>");
    assert_eq!(schema_of::<(i32, bool)>(), "(i32, bool)");
    assert_eq!(schema_of::<BTreeMap<String, Vec<i64>>>(), "map<string, [i64]>");
    assert_eq!(schema_of::<Result<u32, String>>(), "result<u32, string>");
    assert_eq!(schema_of::<std::time::Duration>(), "{secs: u64, nanos: u32}");
    assert_eq!(schema_of::<()>(), "()");
}

#[test]
fn derived_types_are_described_by_their_fields_not_their_name() {
    assert_eq!(schema_of::<Point>(), "{x: i64, y: i64}");
    assert_eq!(schema_of::<elsewhere::Coordinates>(), schema_of::<Point>());
    assert_eq!(schema_of::<Meters>(), "f64");
    assert_eq!(schema_of::<Pair>(), "(u8, string)");
    assert_eq!(schema_of::<Unit>(), "()");
    assert_eq!(
        schema_of::<Shape>(),
        "enum {Empty, Dot({x: i64, y: i64}), Segment({x: i64, y: i64}, {x: i64, y: i64}), \
         Circle {centre: {x: i64, y: i64}, radius: f64}}"
    );
}

#[test]
fn a_recursive_type_refers_back_instead_of_recursing() {
    assert_eq!(schema_of::<Tree<u8>>(), "enum {Leaf(u8), Node(^1, ^1)}");
    assert_eq!(
        schema_of::<Forest>(),
        "{trees: [enum {Leaf(u8), Node(^1, ^1)}], named: map<string, enum {Leaf(u8), Node(^1, ^1)}>}"
    );
}

#[test]
fn signatures_and_their_fingerprints_are_pinned() {
    let golden: [(String, &str, u64); 6] = [
        (
            signature("add", false, &[d::<i64>(), d::<i64>()], d::<i64>()),
            "fn add(i64, i64) -> i64",
            0x6920_9ccb_766f_f687,
        ),
        (
            signature("log", true, &[d::<String>()], d::<()>()),
            "oneway fn log(string)",
            0xe544_4cc5_e2ea_b470,
        ),
        (
            signature("ping", false, &[], d::<()>()),
            "fn ping() -> ()",
            0x7a82_edec_7aee_d76e,
        ),
        (
            signature("div", false, &[d::<i64>(), d::<i64>()], d::<Result<i64, String>>()),
            "fn div(i64, i64) -> result<i64, string>",
            0xd95b_4634_655b_353b,
        ),
        (
            signature("checksum", false, &[d::<[u8]>()], d::<u32>()),
            "fn checksum([u8]) -> u32",
            0xc224_f609_2ae4_0777,
        ),
        (
            signature("draw", false, &[d::<Shape>(), d::<Option<Point>>()], d::<Vec<Point>>()),
            "fn draw(enum {Empty, Dot({x: i64, y: i64}), Segment({x: i64, y: i64}, {x: i64, y: i64}), \
             Circle {centre: {x: i64, y: i64}, radius: f64}}, option<{x: i64, y: i64}>) -> [{x: i64, y: i64}]",
            0x138d_175f_e878_f6ed,
        ),
    ];
    for (made, text, hash) in golden {
        assert_eq!(made, text);
        assert_eq!(fingerprint(&made), hash, "{made}: {:#018x}", fingerprint(&made));
    }
}

#[test]
fn spelling_a_type_another_way_keeps_the_signature() {
    let written = signature("greet", false, &[d::<&str>()], d::<String>());
    let spelled = signature("greet", false, &[d::<std::string::String>()], d::<Box<str>>());
    assert_eq!(written, spelled);
    let changed = signature("greet", false, &[d::<&[u8]>()], d::<String>());
    assert_ne!(written, changed);
}
