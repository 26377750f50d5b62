//! What the fuzz targets share: the sample config's registry and directory (built once),
//! a check that a violation names a field of the request (against the compiled proto
//! descriptors), and bounded JSON values and mappings built from fuzz input.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use arbitrary::{Result, Unstructured};
use jisr::common::error::ApiError;
use jisr::adapters::rest::RestMapping;
use jisr::server::config::Config;
use jisr::directory::Directory;
use jisr::tls::Registry;
use serde_json::{Map, Value};

/// The calling agency of every fuzzed request (registered in the sample config).
pub const CALLER: &str = "social-services";

/// A fixed "now" (2026-09-21T...Z), so a crash reproduces whatever the clock says.
pub const NOW_MS: i64 = 1_790_000_000_000;

pub struct Fixture {
    pub registry: Registry,
    pub directory: Directory,
}

/// The registry and directory of config/jisr.toml.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = Config::parse(
            Path::new("config/jisr.toml"),
            include_str!("../../config/jisr.toml"),
            Vec::new(),
        )
        .expect("sample config parses");
        Fixture {
            registry: Registry::of(&config),
            directory: Directory::from_config(&config).expect("sample directory"),
        }
    })
}

pub use jisr::common::contract::names_a_field;

/// Asserts a validation error is INVALID_ARGUMENT naming only fields of `message`.
pub fn assert_violations(
    result: std::result::Result<(), &ApiError>,
    message: &str,
    len: &dyn Fn(&str) -> Option<usize>,
) {
    let Err(e) = result else { return };
    let ApiError::Invalid(violations) = e else {
        panic!("validation failed with something other than violations: {e:?}");
    };
    assert!(!violations.is_empty(), "an error without violations");
    for v in violations {
        assert!(
            names_a_field(message, &v.field, len),
            "violation {:?} ({}) names no field of {message}",
            v.field,
            v.description
        );
        assert!(
            !v.description.is_empty(),
            "violation {:?} says nothing",
            v.field
        );
    }
}

/// Keys likely to collide with each other and with the canonical JSON's, so mappings
/// hit present paths; now and then any string.
fn key(u: &mut Unstructured) -> Result<String> {
    const KEYS: &[&str] = &[
        "a",
        "b",
        "c",
        "a_b",
        "",
        "id",
        "subject",
        "identifier",
        "value",
        "consent",
        "reference",
        "attachments",
        "0",
        "due_at",
        "kind",
    ];
    if u.ratio(1, 8)? {
        u.arbitrary()
    } else {
        Ok(u.choose(KEYS)?.to_string())
    }
}

/// A dotted path of 1-4 keys, or now and then any string (empty segments included).
pub fn path(u: &mut Unstructured) -> Result<String> {
    if u.ratio(1, 10)? {
        return u.arbitrary();
    }
    let n = u.int_in_range(1..=4)?;
    let keys = (0..n).map(|_| key(u)).collect::<Result<Vec<_>>>()?;
    Ok(keys.join("."))
}

/// A JSON value nested at most `depth` deep.
pub fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let pick = if depth == 0 {
        u.int_in_range(0..=3)?
    } else {
        u.int_in_range(0..=5)?
    };
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => serde_json::Number::from_f64(u.arbitrary()?).map_or_else(
            || Value::from(u.arbitrary::<i64>().unwrap_or(0)),
            Value::Number,
        ),
        3 => Value::String(u.arbitrary()?),
        4 => Value::Array(
            (0..u.int_in_range(0..=3)?)
                .map(|_| value(u, depth - 1))
                .collect::<Result<_>>()?,
        ),
        _ => Value::Object(object(u, depth - 1)?),
    })
}

/// A JSON object nested at most `depth` deep below it.
pub fn object(u: &mut Unstructured, depth: u32) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for _ in 0..u.int_in_range(0..=6)? {
        m.insert(key(u)?, value(u, depth)?);
    }
    Ok(m)
}

/// A mapping of a few renames, flattens, drops and constants over likely paths.
pub fn mapping(u: &mut Unstructured) -> Result<RestMapping> {
    let mut rename = BTreeMap::new();
    for _ in 0..u.int_in_range(0..=4)? {
        rename.insert(path(u)?, path(u)?);
    }
    let mut constants = BTreeMap::new();
    for _ in 0..u.int_in_range(0..=3)? {
        constants.insert(path(u)?, value(u, 2)?);
    }
    Ok(RestMapping {
        path: String::new(),
        rename,
        flatten: (0..u.int_in_range(0..=3)?)
            .map(|_| path(u))
            .collect::<Result<_>>()?,
        constants,
        drop: (0..u.int_in_range(0..=3)?)
            .map(|_| path(u))
            .collect::<Result<_>>()?,
    })
}
